//! Releases committed events in id order, so that a stream's cursor (the last event id
//! it saw) names exactly what it has seen.
//!
//! Event ids come from a sequence, taken when an event is inserted, but transactions
//! commit in their own order: event 11 may commit (and be read) before event 10.
//! Releasing 11 at once would let a client that disconnects right after it resume
//! "after 11" and never see 10. So an event is released only once every id below it is
//! settled: released, or proven never to commit (its transaction rolled back). The
//! proof is the listener's: when a gap outlives a moment, it asks PostgreSQL whether
//! every transaction that was running when it looked has finished, and then looks for
//! the gap's ids in the table one last time.

use std::collections::BTreeMap;

/// The events seen but not yet released, above the release watermark, by id.
#[derive(Debug)]
pub struct Sequencer<T> {
    released: i64,
    pending: BTreeMap<i64, T>,
}

impl<T> Sequencer<T> {
    /// Every id up to `released` is settled.
    pub fn new(released: i64) -> Sequencer<T> {
        Sequencer { released, pending: BTreeMap::new() }
    }

    /// The highest id released: every id up to it is settled.
    pub fn released(&self) -> i64 {
        self.released
    }

    /// Records a committed event; one at or below the watermark was already released.
    pub fn saw(&mut self, id: i64, event: T) {
        if id > self.released {
            self.pending.insert(id, event);
        }
    }

    /// The events that follow the watermark without a gap, in order; releases them.
    pub fn take_contiguous(&mut self) -> Vec<T> {
        let mut taken = Vec::new();
        while let Some(event) = self.pending.remove(&(self.released + 1)) {
            self.released += 1;
            taken.push(event);
        }
        taken
    }

    /// The highest id held back behind a gap.
    pub fn highest_held(&self) -> Option<i64> {
        self.pending.last_key_value().map(|(id, _)| *id)
    }

    /// The ids missing between the watermark and `through` (at most `limit`): the gaps
    /// to look for in the table.
    pub fn holes(&self, through: i64, limit: usize) -> Vec<i64> {
        (self.released + 1..through).filter(|id| !self.pending.contains_key(id)).take(limit).collect()
    }

    /// Every id up to `through` is now proven settled, and the holes were looked for one
    /// last time: releases what is held up to it, in order, and moves the watermark there.
    pub fn settle_through(&mut self, through: i64) -> Vec<T> {
        if through <= self.released {
            return Vec::new();
        }
        self.released = through;
        let later = self.pending.split_off(&(through + 1));
        std::mem::replace(&mut self.pending, later).into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_gap_holds_back_later_events_until_it_fills() {
        let mut sequencer = Sequencer::new(9);
        sequencer.saw(11, "eleven");
        assert_eq!(sequencer.take_contiguous(), Vec::<&str>::new());
        assert_eq!(sequencer.highest_held(), Some(11));
        sequencer.saw(10, "ten");
        assert_eq!(sequencer.take_contiguous(), vec!["ten", "eleven"]);
        assert_eq!(sequencer.highest_held(), None);
        sequencer.saw(10, "ten again");
        assert_eq!(sequencer.take_contiguous(), Vec::<&str>::new(), "an event is not released twice");
    }

    #[test]
    fn a_settled_gap_moves_the_watermark_through_it() {
        let mut sequencer = Sequencer::new(0);
        for id in [3, 5, 9] {
            sequencer.saw(id, id);
        }
        assert_eq!(sequencer.holes(9, 10), vec![1, 2, 4, 6, 7, 8]);
        assert_eq!(sequencer.holes(9, 2), vec![1, 2]);
        assert_eq!(sequencer.settle_through(5), vec![3, 5]);
        assert_eq!(sequencer.released(), 5);
        assert_eq!(sequencer.highest_held(), Some(9));
        sequencer.saw(4, 4);
        sequencer.saw(6, 6);
        assert_eq!(sequencer.take_contiguous(), vec![6], "4 was read with the settled range");
        assert_eq!(sequencer.settle_through(5), Vec::<i64>::new());
        assert_eq!(sequencer.released(), 6, "settling backwards changes nothing");
    }

    proptest! {
        /// Whatever the commit order, events leave in increasing id order, each once.
        #[test]
        fn releases_are_in_order_and_complete(order in Just((1..=40i64).collect::<Vec<_>>()).prop_shuffle()) {
            let mut sequencer = Sequencer::new(0);
            let mut released = Vec::new();
            for id in order {
                sequencer.saw(id, id);
                released.extend(sequencer.take_contiguous());
            }
            prop_assert_eq!(released, (1..=40).collect::<Vec<_>>());
        }
    }
}
