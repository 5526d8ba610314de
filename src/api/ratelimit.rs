//! Per-identity rate limiting of the operator API (`Settings.spec.api.rateLimit` calls per
//! minute): a token bucket per identity, holding at most `rate` tokens (the burst) and
//! refilled continuously at `rate` per minute; a call takes one token or is refused with the
//! time until the next token.
//!
//! The clock is a parameter, so the limiter is tested without sleeping. Memory is bounded:
//! a bucket left alone for a minute is full again, exactly like one never seen, so such
//! buckets are dropped (swept at most once a minute).
//!
//! This module does not know who an identity is; callers pass the authenticated name.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The time a bucket takes to refill from empty.
const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Tokens left at `at`.
    tokens: f64,
    /// When `tokens` was computed.
    at: Instant,
}

#[derive(Debug)]
struct State {
    buckets: HashMap<String, Bucket>,
    last_sweep: Option<Instant>,
}

/// Token buckets by identity.
#[derive(Debug)]
pub struct RateLimiter {
    /// Calls per minute, and the burst.
    rate: u32,
    state: Mutex<State>,
}

impl RateLimiter {
    /// A limiter allowing `per_minute` calls per minute per identity, in bursts of up to
    /// `per_minute` (0 is taken as 1: validation requires at least 1).
    pub fn new(per_minute: u32) -> Self {
        RateLimiter {
            rate: per_minute.max(1),
            state: Mutex::new(State {
                buckets: HashMap::new(),
                last_sweep: None,
            }),
        }
    }

    /// Calls per minute (and burst).
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Takes a token for `identity` at `now`: `Ok` when the call may proceed, else how long
    /// to wait until a token is there. A `now` earlier than a previous call's counts as no
    /// time passed.
    pub fn check(&self, identity: &str, now: Instant) -> Result<(), Duration> {
        let cap = f64::from(self.rate);
        let per_sec = cap / WINDOW.as_secs_f64();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.sweep(&mut state, now);
        let bucket = state.buckets.entry(identity.to_string()).or_insert(Bucket {
            tokens: cap,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        let tokens = (bucket.tokens + elapsed * per_sec).min(cap);
        bucket.at = bucket.at.max(now);
        if tokens >= 1.0 {
            bucket.tokens = tokens - 1.0;
            Ok(())
        } else {
            bucket.tokens = tokens;
            Err(Duration::from_secs_f64((1.0 - tokens) / per_sec))
        }
    }

    /// Drops every bucket that is full again at `now` (idle for a whole window): the same
    /// as having none. Runs at most once per window.
    fn sweep(&self, state: &mut State, now: Instant) {
        if state
            .last_sweep
            .is_some_and(|t| now.saturating_duration_since(t) < WINDOW)
        {
            return;
        }
        state.last_sweep = Some(now);
        state
            .buckets
            .retain(|_, b| now.saturating_duration_since(b.at) < WINDOW);
    }

    /// How many identities have a bucket (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .buckets
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_rate_calls_passes_then_the_next_waits_for_one_token() {
        let limiter = RateLimiter::new(60);
        let t0 = Instant::now();
        for i in 0..60 {
            assert_eq!(limiter.check("alice", t0), Ok(()), "call {i}");
        }
        let wait = limiter.check("alice", t0).unwrap_err();
        // 60 per minute: one token a second.
        assert!(
            wait > Duration::from_millis(990) && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
    }

    #[test]
    fn tokens_refill_at_rate_per_minute_up_to_the_burst() {
        let limiter = RateLimiter::new(120);
        let t0 = Instant::now();
        for _ in 0..120 {
            limiter.check("bot", t0).unwrap();
        }
        assert!(limiter.check("bot", t0).is_err());
        // 120 per minute: two tokens a second.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(limiter.check("bot", t1), Ok(()));
        assert_eq!(limiter.check("bot", t1), Ok(()));
        assert!(limiter.check("bot", t1).is_err());
        // A long pause refills only up to the burst.
        let t2 = t1 + Duration::from_secs(3600);
        for i in 0..120 {
            assert_eq!(limiter.check("bot", t2), Ok(()), "call {i}");
        }
        assert!(limiter.check("bot", t2).is_err());
    }

    #[test]
    fn identities_have_their_own_buckets() {
        let limiter = RateLimiter::new(2);
        let t0 = Instant::now();
        limiter.check("alice", t0).unwrap();
        limiter.check("alice", t0).unwrap();
        let wait = limiter.check("alice", t0).unwrap_err();
        assert!(
            wait.abs_diff(Duration::from_secs(30)) < Duration::from_millis(1),
            "{wait:?}"
        );
        assert_eq!(limiter.check("bob", t0), Ok(()));
        assert_eq!(limiter.check("bob", t0), Ok(()));
        assert!(limiter.check("bob", t0).is_err());
    }

    #[test]
    fn refused_calls_take_no_token() {
        let limiter = RateLimiter::new(1);
        let t0 = Instant::now();
        limiter.check("a", t0).unwrap();
        for s in 1..60 {
            assert!(limiter.check("a", t0 + Duration::from_secs(s)).is_err());
        }
        assert_eq!(limiter.check("a", t0 + Duration::from_secs(60)), Ok(()));
    }

    #[test]
    fn a_clock_going_back_gives_no_tokens() {
        let limiter = RateLimiter::new(1);
        let t0 = Instant::now() + Duration::from_secs(100);
        limiter.check("a", t0).unwrap();
        assert!(limiter.check("a", t0 - Duration::from_secs(50)).is_err());
        assert!(limiter.check("a", t0 + Duration::from_secs(30)).is_err());
        assert_eq!(limiter.check("a", t0 + Duration::from_secs(60)), Ok(()));
    }

    #[test]
    fn idle_buckets_are_dropped() {
        let limiter = RateLimiter::new(10);
        let t0 = Instant::now();
        for i in 0..1000 {
            limiter.check(&format!("id{i}"), t0).unwrap();
        }
        assert_eq!(limiter.tracked(), 1000);
        let later = t0 + WINDOW + Duration::from_secs(1);
        limiter.check("fresh", later).unwrap();
        assert_eq!(limiter.tracked(), 1);
        // A dropped bucket was full: the identity gets its whole burst again.
        for _ in 0..10 {
            limiter.check("id7", later).unwrap();
        }
        assert!(limiter.check("id7", later).is_err());
    }
}
