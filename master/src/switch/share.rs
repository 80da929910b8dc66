//! Fair share of a destination's RX channel among the sources sending to it.

/// Fair share of a destination's RX channel (see [`ShareGuard`]): once fewer than
/// 1/`RESERVE_DIV` of its buffers are free, one source may deliver at most
/// [`STREAK_LIMIT`] frames in a row to it.
pub(super) const RESERVE_DIV: usize = 4;
pub(super) const STREAK_LIMIT: u32 = 8;
/// How many rounds after another source last sent to a destination the share is still
/// enforced there: a lone bulk sender is never cut.
pub(super) const SHARE_MEMORY_ROUNDS: u64 = 100_000;
/// The source index frames from the NIC count as.
pub(super) const FROM_LINK: usize = usize::MAX;
/// No frame seen yet.
pub(super) const NO_SOURCE: usize = usize::MAX - 1;

/// Keeps one source from filling a destination's RX channel so that nobody else gets a
/// frame in (a tenant flooding another tenant's service would otherwise starve that
/// service's other clients: their frames, retransmissions included, all find the ring
/// full). While the channel has buffers to spare nothing is limited; once it is nearly
/// full, a source sending a long run of frames (a flooder's batch) is cut to
/// [`STREAK_LIMIT`] per run and the rest of its run is shed, while a source that sends a
/// frame now and then (a request, an ACK) still finds the reserve.
#[derive(Clone, Copy, Debug)]
pub(super) struct ShareGuard {
    last_src: usize,
    streak: u32,
    /// The round in which the sending source last changed (someone else sent); `None`
    /// while only one source ever sent.
    switched_at: Option<u64>,
}

impl ShareGuard {
    pub(super) fn new() -> Self {
        ShareGuard {
            last_src: NO_SOURCE,
            streak: 0,
            switched_at: None,
        }
    }

    /// Count a frame from `src` in round `round`; true if it must be shed. Only a long
    /// run, with another source sending lately, asks `nearly_full`: nothing is checked,
    /// and nothing shed, for a lone sender or on a quiet channel.
    pub(super) fn shed(
        &mut self,
        src: usize,
        round: u64,
        nearly_full: impl FnOnce() -> bool,
    ) -> bool {
        if self.last_src == src {
            self.streak = self.streak.saturating_add(1);
        } else {
            if self.last_src != NO_SOURCE {
                self.switched_at = Some(round);
            }
            self.last_src = src;
            self.streak = 1;
        }
        self.streak > STREAK_LIMIT
            && self
                .switched_at
                .is_some_and(|at| round.wrapping_sub(at) < SHARE_MEMORY_ROUNDS)
            && nearly_full()
    }
}
