//! Reading server-sent events off a streaming response.

use std::time::Duration;

use serde_json::Value;

use super::TestApp;

/// One server-sent event.
#[derive(Debug)]
pub struct Sse {
    pub id: Option<i64>,
    pub event: String,
    pub data: Value,
}

/// Reads server-sent events off a streaming response.
pub struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    pub async fn open(app: &TestApp, query: &str, token: &str, last_event_id: Option<i64>) -> SseReader {
        let mut request = app.client.get(format!("{}/v1/runs/stream{query}", app.address)).bearer_auth(token);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.unwrap();
        if response.status() != 200 {
            panic!("the stream does not open: {} {}", response.status(), response.text().await.unwrap());
        }
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        SseReader { response, buffer: String::new() }
    }

    /// The next event (comments and `retry:` skipped), or `None` if none comes within
    /// `patience` or the stream ends.
    pub async fn next_within(&mut self, patience: Duration) -> Option<Sse> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, "message".to_owned(), None);
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("id: ") {
                        id = Some(value.parse().unwrap());
                    } else if let Some(value) = line.strip_prefix("event: ") {
                        event = value.to_owned();
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(value).unwrap());
                    }
                }
                if let Some(data) = data {
                    return Some(Sse { id, event, data });
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk()).await.ok()?.unwrap()?;
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    pub async fn next(&mut self) -> Sse {
        self.next_within(Duration::from_secs(10)).await.expect("an event arrives")
    }

    /// `count` events, failing if they do not all come.
    pub async fn take(&mut self, count: usize) -> Vec<Sse> {
        let mut events = Vec::with_capacity(count);
        while events.len() < count {
            events.push(self.next().await);
        }
        events
    }

    /// Asserts that no event comes for a moment.
    pub async fn assert_quiet(&mut self) {
        if let Some(event) = self.next_within(Duration::from_millis(500)).await {
            panic!("unexpected event {event:?}");
        }
    }
}
