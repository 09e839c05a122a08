//! Token-bucket rate limits with bounded memory.
//!
//! Each key (a client address, or a product and claimed machine8) has a
//! bucket of `burst` tokens that refills at `burst` per `period`; a request
//! takes one token or is refused with the time until the next one.
//!
//! # Bounded memory
//! At most `max_keys` buckets are kept. When a new key finds the table
//! full, buckets that have refilled are dropped first (a full bucket is
//! what a forgotten key starts with, so nothing is lost), and if that is
//! not room enough, those nearest to full go until a quarter is free,
//! the least recently used first among equals. A key that is being limited (its bucket
//! empty) is the last to go: flooding the table with new keys, which
//! each spend a token or none, cannot wipe another client's exhausted
//! allowance: the flood would have to leave three quarters of the table
//! emptier than that bucket.
//! Making room costs O(`max_keys`) once per `max_keys / 4` new keys, so
//! every operation is O(1) amortised.
//!
//! A limiter lives in one process: behind a load balancer with N brokers,
//! a client that is spread over all of them gets up to N times the limit.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest window a rate may have: humantime's `1y` (365.25 days).
/// A wait computed from an absurd one (`1/18446744073709551615s`) is past
/// what a `Duration` holds.
pub const MAX_PERIOD: Duration = Duration::from_secs(31_557_600);

/// A rate: `burst` requests at once, refilled at `burst` per `period`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Bucket size.
    pub burst: u32,
    /// Time to refill a whole bucket.
    pub period: Duration,
}

impl Rate {
    /// Parse `N/DURATION` (`60/1m`, `5/10s`): N from 1 to `u32::MAX`,
    /// DURATION above zero and at most [`MAX_PERIOD`].
    pub fn parse(s: &str) -> Result<Rate, String> {
        let bad = || {
            format!(
                "{s:?}: expected N/DURATION with N from 1 to {} and DURATION above 0 and at most 1y, such as 60/1m or 5/10s",
                u32::MAX
            )
        };
        let (n, period) = s.split_once('/').ok_or_else(bad)?;
        let burst: u32 = n.trim().parse().map_err(|_| bad())?;
        let period = parse_period(period).ok_or_else(bad)?;
        if burst == 0 {
            return Err(bad());
        }
        Ok(Rate { burst, period })
    }

    /// Parse a byte rate, `N[KiB|MiB|GiB]/DURATION` (`1GiB/1h`), at most
    /// 4 GiB less a byte per period.
    pub fn parse_bytes(s: &str) -> Result<Rate, String> {
        let bad = || {
            format!("{s:?}: expected N[KiB|MiB|GiB]/DURATION with N ≥ 1 and under 4GiB and DURATION above 0 and at most 1y, such as 1GiB/1h")
        };
        let (n, period) = s.split_once('/').ok_or_else(bad)?;
        let n = n.trim();
        let (digits, unit) = match n.find(|c: char| !c.is_ascii_digit()) {
            Some(i) => n.split_at(i),
            None => (n, ""),
        };
        let scale: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            _ => return Err(bad()),
        };
        let bytes = digits
            .parse::<u64>()
            .ok()
            .and_then(|d| d.checked_mul(scale))
            .and_then(|b| u32::try_from(b).ok())
            .ok_or_else(bad)?;
        let period = parse_period(period).ok_or_else(bad)?;
        if bytes == 0 {
            return Err(bad());
        }
        Ok(Rate {
            burst: bytes,
            period,
        })
    }

    fn per_sec(&self) -> f64 {
        f64::from(self.burst) / self.period.as_secs_f64()
    }
}

/// A rate's window: above zero and at most [`MAX_PERIOD`].
fn parse_period(s: &str) -> Option<Duration> {
    humantime::parse_duration(s.trim())
        .ok()
        .filter(|p| !p.is_zero() && *p <= MAX_PERIOD)
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Rate limits for keys of type `K`.
pub struct Limiter<K> {
    rate: Rate,
    max_keys: usize,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    /// A limiter holding at most `max_keys` (at least 2) buckets.
    pub fn new(rate: Rate, max_keys: usize) -> Limiter<K> {
        Limiter {
            rate,
            max_keys: max_keys.max(2),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// `b`'s tokens at `now`, refilled.
    fn tokens_at(&self, b: &Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        (b.tokens + elapsed * self.rate.per_sec()).min(f64::from(self.rate.burst))
    }

    /// Room for one more key in `buckets` (see the module documentation).
    fn make_room(&self, buckets: &mut HashMap<K, Bucket>, now: Instant) {
        let burst = f64::from(self.rate.burst);
        buckets.retain(|_, b| self.tokens_at(b, now) < burst);
        // A quarter free, whatever the refilled ones gave: otherwise a
        // table where one bucket refills now and then would be scanned
        // whole at every new key.
        let target = self.max_keys - (self.max_keys / 4).max(1);
        if buckets.len() <= target {
            return;
        }
        // Fullest first, then least recently used: the `drop`-th in that
        // order is the cut; it and everything before it go. Found over the
        // buckets' values, so no key is copied while every request waits
        // on this limiter.
        let order = |a: &(f64, Instant), b: &(f64, Instant)| {
            b.0.partial_cmp(&a.0)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.1.cmp(&b.1))
        };
        let mut values: Vec<(f64, Instant)> = buckets
            .values()
            .map(|b| (self.tokens_at(b, now), b.at))
            .collect();
        let drop = buckets.len() - target;
        let (_, cut, _) = values.select_nth_unstable_by(drop - 1, order);
        let cut = *cut;
        buckets.retain(|_, b| order(&(self.tokens_at(b, now), b.at), &cut).is_gt());
    }

    /// Take a token for `key` at `now`: `Ok` or the wait until the next.
    pub fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        self.take(key, 1.0, now)
    }

    /// Take `cost` tokens for `key` at `now` (a byte budget spends one per
    /// byte): `Ok`, or the wait until there are that many. A cost over
    /// the burst is never met; the caller keeps costs within it.
    pub fn take(&self, key: &K, cost: f64, now: Instant) -> Result<(), Duration> {
        // A poisoned lock only means another request panicked mid-update of
        // plain numbers; the data is still usable.
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = match buckets.get(key) {
            Some(b) => *b,
            None => {
                if buckets.len() >= self.max_keys {
                    self.make_room(&mut buckets, now);
                }
                Bucket {
                    tokens: f64::from(self.rate.burst),
                    at: now,
                }
            }
        };
        let tokens = self.tokens_at(&bucket, now);
        let (result, tokens) = if tokens >= cost {
            (Ok(()), tokens - cost)
        } else {
            // Saturated at MAX_PERIOD, never a panic: a `Rate` made by
            // hand (its fields are public) or a cost over the burst can
            // make a wait past what a `Duration` holds (or not a number),
            // and `from_secs_f64` would panic the worker mid-request.
            let wait = (cost - tokens) / self.rate.per_sec();
            let wait = Duration::try_from_secs_f64(wait)
                .unwrap_or(MAX_PERIOD)
                .min(MAX_PERIOD);
            (Err(wait), tokens)
        };
        // Never back in time: a request that took long to arrive (a slow
        // body) checks with the instant it started at, and moving the
        // bucket back to it would refill the same time twice.
        let at = now.max(bucket.at);
        buckets.insert(key.clone(), Bucket { tokens, at });
        result
    }

    /// Give back the token [`Limiter::check`] took for `key`: the request
    /// it admitted was refused for another reason, which is not `key`'s
    /// doing. Never above the burst; a key forgotten since keeps nothing.
    pub fn give_back(&self, key: &K) {
        self.give_back_n(key, 1.0);
    }

    /// Give back `cost` tokens [`Limiter::take`] took for `key`.
    pub fn give_back_n(&self, key: &K, cost: f64) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let burst = f64::from(self.rate.burst);
        if let Some(b) = buckets.get_mut(key) {
            b.tokens = (b.tokens + cost).min(burst);
        }
    }

    /// How many keys are tracked (for tests and `/healthz`).
    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rates() {
        assert_eq!(
            Rate::parse("60/1m").unwrap(),
            Rate {
                burst: 60,
                period: Duration::from_secs(60)
            }
        );
        assert!(Rate::parse("0/1m").is_err());
        assert!(Rate::parse("5").is_err());
        assert!(Rate::parse("5/0s").is_err());
        assert!(Rate::parse("x/1m").is_err());
        assert_eq!(Rate::parse("1/1y").unwrap().period, MAX_PERIOD);
        for bad in ["1/18446744073709551615s", "1/366d", "4294967296/1m"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
        assert!(Rate::parse_bytes("1GiB/18446744073709551615s").is_err());
    }

    /// A wait past what a `Duration` holds is MAX_PERIOD, not a panic of
    /// the worker serving the request (which left the client no answer).
    #[test]
    fn a_wait_past_what_a_duration_holds_saturates() {
        let huge = Rate {
            burst: 1,
            period: Duration::MAX,
        };
        let l = Limiter::new(huge, 100);
        let t = Instant::now();
        assert!(l.check(&"a", t).is_ok());
        assert_eq!(l.check(&"a", t), Err(MAX_PERIOD));
        let year = Limiter::new(Rate::parse("2/1y").unwrap(), 100);
        assert!(year.take(&"a", 2.0, t).is_ok());
        assert_eq!(
            year.take(&"a", 5.0, t),
            Err(MAX_PERIOD),
            "a cost over the burst waits at most MAX_PERIOD"
        );
    }

    #[test]
    fn parses_byte_rates_and_spends_them_by_the_byte() {
        let r = Rate::parse_bytes("1GiB/1h").unwrap();
        assert_eq!((r.burst, r.period), (1 << 30, Duration::from_secs(3600)));
        assert_eq!(Rate::parse_bytes("512 KiB/1m").unwrap().burst, 512 << 10);
        assert_eq!(Rate::parse_bytes("100/1s").unwrap().burst, 100);
        for bad in ["4GiB/1h", "0MiB/1h", "1TiB/1h", "1GiB", "1GiB/0s", "x/1h"] {
            assert!(Rate::parse_bytes(bad).is_err(), "{bad}");
        }
        let l = Limiter::new(Rate::parse_bytes("10KiB/10s").unwrap(), 100);
        let t = Instant::now();
        assert!(l.take(&"a", 8192.0, t).is_ok());
        let wait = l.take(&"a", 4096.0, t).unwrap_err();
        // 2 KiB short at 1 KiB/s.
        assert!(
            wait > Duration::from_millis(1900) && wait <= Duration::from_secs(2),
            "{wait:?}"
        );
        l.give_back_n(&"a", 8192.0);
        assert!(
            l.take(&"a", 10240.0, t).is_ok(),
            "given back, up to the burst"
        );
    }

    #[test]
    fn a_late_check_with_an_earlier_instant_refills_nothing_twice() {
        let l = Limiter::new(Rate::parse("10/10s").unwrap(), 100);
        let t = Instant::now();
        for _ in 0..10 {
            assert!(l.take(&"a", 1.0, t + Duration::from_secs(10)).is_ok());
        }
        // A request that started 10 s earlier and finished now.
        assert!(l.take(&"a", 1.0, t).is_err());
        assert!(
            l.take(&"a", 1.0, t + Duration::from_secs(10)).is_err(),
            "the bucket was not moved back to the earlier instant"
        );
    }

    #[test]
    fn limits_then_refills() {
        let l = Limiter::new(Rate::parse("2/10s").unwrap(), 100);
        let t = Instant::now();
        assert!(l.check(&"a", t).is_ok());
        assert!(l.check(&"a", t).is_ok());
        let wait = l.check(&"a", t).unwrap_err();
        assert!(wait > Duration::from_secs(4) && wait <= Duration::from_secs(5));
        assert!(l.check(&"b", t).is_ok(), "keys are independent");
        assert!(l.check(&"a", t + Duration::from_secs(5)).is_ok());
        assert!(l.check(&"a", t + Duration::from_secs(5)).is_err());
    }

    #[test]
    fn a_token_given_back_can_be_taken_again_but_never_beyond_the_burst() {
        let l = Limiter::new(Rate::parse("2/1h").unwrap(), 100);
        let t = Instant::now();
        assert!(l.check(&"a", t).is_ok());
        assert!(l.check(&"a", t).is_ok());
        assert!(l.check(&"a", t).is_err());
        l.give_back(&"a");
        assert!(l.check(&"a", t).is_ok(), "the token given back");
        assert!(l.check(&"a", t).is_err());
        // Given back more often than taken: still only the burst.
        l.give_back(&"b");
        assert!(l.check(&"b", t).is_ok());
        for _ in 0..5 {
            l.give_back(&"b");
        }
        assert!(l.check(&"b", t).is_ok());
        assert!(l.check(&"b", t).is_ok());
        assert!(l.check(&"b", t).is_err(), "no more than the burst of 2");
    }

    #[test]
    fn memory_is_bounded_and_recent_keys_survive() {
        let l = Limiter::new(Rate::parse("1/1h").unwrap(), 10);
        let t = Instant::now();
        assert!(l.check(&0, t).is_ok());
        for k in 1..1000 {
            let _ = l.check(&k, t + Duration::from_millis(k));
            assert!(l.len() <= 10, "at most max_keys buckets");
        }
        let late = t + Duration::from_secs(1);
        assert!(
            l.check(&999, late).is_err(),
            "a recent key keeps its bucket"
        );
        assert!(
            l.check(&0, late).is_ok(),
            "among buckets as empty, the least recently used is forgotten"
        );
    }

    /// A flood of new keys, each spending a token or none (refused by
    /// another limit and given back), cannot wipe the bucket of a client
    /// being limited: the flood's buckets are fuller, so they go first.
    #[test]
    fn a_flood_of_new_keys_does_not_forget_a_limited_one() {
        let l = Limiter::new(Rate::parse("120/1h").unwrap(), 100);
        let t = Instant::now();
        for _ in 0..120 {
            assert!(l.check(&u32::MAX, t).is_ok());
        }
        assert!(l.check(&u32::MAX, t).is_err());
        for k in 0..100_000u32 {
            let now = t + Duration::from_micros(u64::from(k));
            let _ = l.check(&k, now);
            if k % 2 == 0 {
                l.give_back(&k);
            }
            assert!(l.len() <= 100);
        }
        let later = t + Duration::from_secs(1);
        assert!(
            l.check(&u32::MAX, later).is_err(),
            "the limited client is still limited"
        );
        // A bucket that refilled goes before one in use.
        let l = Limiter::new(Rate::parse("1/1s").unwrap(), 2);
        assert!(l.check(&"old", t).is_ok());
        assert!(l.check(&"busy", t + Duration::from_secs(5)).is_ok());
        assert!(l.check(&"new", t + Duration::from_secs(5)).is_ok());
        assert!(
            l.check(&"busy", t + Duration::from_millis(5100)).is_err(),
            "kept: it had not refilled, unlike `old`"
        );
    }
}
