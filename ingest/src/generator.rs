//! A generator of realistic card transactions, for the demo, tests and benchmarks.
//!
//! Events match the demo table (`demo.toml`): most arrive a little out of order
//! (up to 30 s behind the generator's clock), a few are late (more than an hour and
//! the allowed lateness behind), and a few are malformed (broken JSON, a string
//! amount, a missing card, an unreadable time). Deterministic for a given seed.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// The demo table's configuration, as TOML.
pub const DEMO_CONFIG: &str = include_str!("demo.toml");

const CATEGORIES: &[(&str, f64)] = &[
    ("grocery", 45.0),
    ("restaurants", 38.0),
    ("fuel", 55.0),
    ("travel", 420.0),
    ("electronics", 310.0),
    ("fashion", 95.0),
    ("pharmacy", 24.0),
    ("entertainment", 30.0),
    ("utilities", 120.0),
    ("online", 60.0),
];
const COUNTRIES: &[&str] = &["US", "GB", "DE", "FR", "ES", "IT", "NL", "SE", "JP", "BR", "CA", "AU", "IN", "MX", "PL"];
const DEVICES: &[&str] = &["ios", "android", "web", "pos", "atm"];
const MERCHANT_WORDS: &[&str] = &[
    "Acme",
    "Blue",
    "Corner",
    "Delta",
    "Evergreen",
    "Fox",
    "Golden",
    "Harbor",
    "Iron",
    "Juniper",
    "Kite",
    "Lumen",
    "Maple",
    "North",
    "Orbit",
    "Pine",
    "Quay",
    "River",
    "Summit",
    "Tidal",
];
const MERCHANT_KINDS: &[&str] =
    &["Market", "Cafe", "Station", "Air", "Tech", "Outfitters", "Pharmacy", "Cinema", "Power", "Shop"];

/// What share of events are out of order, late or malformed.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    pub out_of_order: f64,
    pub late: f64,
    pub malformed: f64,
}

impl Default for Mix {
    fn default() -> Self {
        Mix { out_of_order: 0.10, late: 0.002, malformed: 0.001 }
    }
}

/// What kind of event the generator made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    OnTime,
    OutOfOrder,
    Late,
    Malformed,
}

/// One generated event.
#[derive(Debug, Clone)]
pub struct Event {
    pub key: String,
    pub line: String,
    pub kind: Kind,
}

pub struct Generator {
    rng: SmallRng,
    mix: Mix,
    cards: u32,
    seq: u64,
}

impl Generator {
    pub fn new(seed: u64, mix: Mix) -> Generator {
        Generator { rng: SmallRng::seed_from_u64(seed), mix, cards: 50_000, seq: 0 }
    }

    /// The next event, with event time near `now_ms`.
    pub fn next_event(&mut self, now_ms: i64) -> Event {
        self.seq += 1;
        let r: f64 = self.rng.random();
        let (kind, ts) = if r < self.mix.malformed {
            (Kind::Malformed, now_ms)
        } else if r < self.mix.malformed + self.mix.late {
            // More than the segment (1 h) plus the lateness (5 m) behind.
            (Kind::Late, now_ms - 3_900_000 - self.rng.random_range(0..3_600_000))
        } else if r < self.mix.malformed + self.mix.late + self.mix.out_of_order {
            (Kind::OutOfOrder, now_ms - self.rng.random_range(1_000..30_000))
        } else {
            (Kind::OnTime, now_ms)
        };
        // Cards are skewed: a tenth of them make half the transactions.
        let card = if self.rng.random_bool(0.5) {
            self.rng.random_range(0..self.cards / 10)
        } else {
            self.rng.random_range(0..self.cards)
        };
        let key = format!("card-{card:06}");
        let (category, base) = CATEGORIES[self.rng.random_range(0..CATEGORIES.len())];
        let country = COUNTRIES[self.rng.random_range(0..COUNTRIES.len())];
        let device = DEVICES[self.rng.random_range(0..DEVICES.len())];
        let merchant = format!(
            "{} {}",
            MERCHANT_WORDS[self.rng.random_range(0..MERCHANT_WORDS.len())],
            MERCHANT_KINDS[self.rng.random_range(0..MERCHANT_KINDS.len())]
        );
        let status = match self.rng.random_range(0..100) {
            0..93 => "approved",
            93..98 => "declined",
            _ => "review",
        };
        let factor: f64 = 0.2 + self.rng.random::<f64>() * 1.6;
        let amount = (base * factor * 100.0).round() / 100.0;
        let ts_json = match self.rng.random_range(0..10) {
            0..2 => ts.to_string(),
            _ => format!("\"{}\"", crate::time::format_ms(ts)),
        };
        let line = if kind == Kind::Malformed {
            match self.seq % 4 {
                0 => format!(r#"{{"ts":{ts_json},"card_id":"{key}","merchant":"{merchant}","amount":"#),
                1 => format!(
                    r#"{{"ts":{ts_json},"card_id":"{key}","merchant":"{merchant}","category":"{category}","country":"{country}","device":"{device}","status":"{status}","amount":"{amount}"}}"#
                ),
                2 => format!(
                    r#"{{"ts":{ts_json},"merchant":"{merchant}","category":"{category}","country":"{country}","status":"{status}","amount":{amount}}}"#
                ),
                _ => format!(
                    r#"{{"ts":"last tuesday","card_id":"{key}","merchant":"{merchant}","category":"{category}","country":"{country}","status":"{status}","amount":{amount}}}"#
                ),
            }
        } else {
            format!(
                r#"{{"ts":{ts_json},"card_id":"{key}","merchant":"{merchant}","category":"{category}","country":"{country}","device":"{device}","status":"{status}","amount":{amount}}}"#
            )
        };
        Event { key, line, kind }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Decoder;
    use weir_storage::config::WeirConfig;

    #[test]
    fn events_match_the_demo_table_and_the_mix() {
        let cfg = WeirConfig::from_toml(DEMO_CONFIG).unwrap();
        let d = Decoder::new(&cfg.tables[0]);
        let mut g = Generator::new(7, Mix { out_of_order: 0.1, late: 0.01, malformed: 0.01 });
        let (mut bad, mut ok) = (0, 0);
        for _ in 0..20_000 {
            let e = g.next_event(1_800_000_000_000);
            match (e.kind, d.decode(e.line.as_bytes())) {
                (Kind::Malformed, Err(_)) => bad += 1,
                (Kind::Malformed, Ok(_)) => panic!("malformed event decoded: {}", e.line),
                (_, Ok(_)) => ok += 1,
                (_, Err(reason)) => panic!("good event refused ({reason}): {}", e.line),
            }
        }
        assert!(bad > 100 && bad < 300, "{bad}");
        assert_eq!(bad + ok, 20_000);
    }
}
