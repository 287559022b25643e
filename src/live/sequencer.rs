//! Releases announced event ids in id order, so that a stream's cursor (the last event
//! id it saw) names exactly what it has seen.
//!
//! Event ids come from a sequence, taken when an event is inserted, but transactions
//! commit in their own order: event 11 may commit (and be announced) before event 10.
//! Releasing 11 at once would let a client that disconnects right after it resume
//! "after 11" and never see 10. So an id is released only once every id below it is
//! settled: released, or proven never to commit (its transaction rolled back). The
//! proof is the listener's: when a gap outlives a moment, it asks PostgreSQL whether
//! every transaction that was running when it looked has finished, and then reads the
//! gap's committed events from the table.

use std::collections::BTreeSet;

/// The ids announced but not yet released, above the release watermark.
#[derive(Debug)]
pub struct Sequencer {
    released: i64,
    pending: BTreeSet<i64>,
}

impl Sequencer {
    /// Every id up to `released` is settled.
    pub fn new(released: i64) -> Sequencer {
        Sequencer { released, pending: BTreeSet::new() }
    }

    /// The highest id released: every id up to it is settled.
    pub fn released(&self) -> i64 {
        self.released
    }

    /// Records an announced id; one at or below the watermark was already released.
    pub fn announce(&mut self, id: i64) {
        if id > self.released {
            self.pending.insert(id);
        }
    }

    /// The ids that follow the watermark without a gap, in order; releases them.
    pub fn take_contiguous(&mut self) -> Vec<i64> {
        let mut taken = Vec::new();
        while self.pending.first() == Some(&(self.released + 1)) {
            self.released += 1;
            self.pending.pop_first();
            taken.push(self.released);
        }
        taken
    }

    /// The highest announced id held back behind a gap.
    pub fn highest_held(&self) -> Option<i64> {
        self.pending.last().copied()
    }

    /// Every id up to `through` is now proven settled and has been read from the table:
    /// moves the watermark there. Returns the range to read, `(from, through]`.
    pub fn settle_through(&mut self, through: i64) -> Option<(i64, i64)> {
        if through <= self.released {
            return None;
        }
        let from = self.released;
        self.released = through;
        self.pending = self.pending.split_off(&(through + 1));
        Some((from, through))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_gap_holds_back_later_ids_until_it_fills() {
        let mut sequencer = Sequencer::new(9);
        sequencer.announce(11);
        assert_eq!(sequencer.take_contiguous(), Vec::<i64>::new());
        assert_eq!(sequencer.highest_held(), Some(11));
        sequencer.announce(10);
        assert_eq!(sequencer.take_contiguous(), vec![10, 11]);
        assert_eq!(sequencer.highest_held(), None);
        sequencer.announce(10);
        assert_eq!(sequencer.take_contiguous(), Vec::<i64>::new(), "a repeated id is not released twice");
    }

    #[test]
    fn a_settled_gap_releases_everything_through_it() {
        let mut sequencer = Sequencer::new(0);
        for id in [3, 5, 9] {
            sequencer.announce(id);
        }
        assert_eq!(sequencer.settle_through(5), Some((0, 5)));
        assert_eq!(sequencer.highest_held(), Some(9));
        sequencer.announce(4);
        sequencer.announce(6);
        assert_eq!(sequencer.take_contiguous(), vec![6], "4 was read with the settled range");
        assert_eq!(sequencer.settle_through(5), None);
    }

    proptest! {
        /// Whatever the commit order, ids leave in increasing order, each once, and an id
        /// leaves only after every smaller committed id.
        #[test]
        fn releases_are_in_order_and_complete(order in Just((1..=40i64).collect::<Vec<_>>()).prop_shuffle()) {
            let mut sequencer = Sequencer::new(0);
            let mut released = Vec::new();
            for id in order {
                sequencer.announce(id);
                released.extend(sequencer.take_contiguous());
            }
            prop_assert_eq!(released, (1..=40).collect::<Vec<_>>());
        }
    }
}
