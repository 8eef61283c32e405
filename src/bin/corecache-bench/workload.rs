//! What to send: key distributions (uniform, zipf), value sizes, the get/set mix and key names.
//!
//! Everything here is deterministic given a seed, so a run can be repeated.

use corecache::protocol::client::encode_key;

/// A small, fast PRNG (splitmix64). Good enough for load generation; not for anything secret.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n); `n > 0`.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        // Multiply-shift: bias is below 2^-64 * n, irrelevant here.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

/// Zipf over ranks 1..=n with exponent `s > 0`, by rejection-inversion (Hörmann and Derflinger,
/// "Rejection-inversion to generate variates from monotone discrete distributions", 1996).
/// O(1) memory and expected O(1) time for any n, so 100M keys cost nothing to set up.
#[derive(Clone, Debug)]
pub struct Zipf {
    n: f64,
    s: f64,
    h_integral_x1: f64,
    h_integral_n: f64,
    threshold: f64,
}

impl Zipf {
    pub fn new(n: u64, s: f64) -> Zipf {
        assert!(n >= 1, "zipf needs at least one element");
        assert!(s > 0.0 && s.is_finite(), "zipf exponent must be > 0");
        let mut z = Zipf {
            n: n as f64,
            s,
            h_integral_x1: 0.0,
            h_integral_n: 0.0,
            threshold: 0.0,
        };
        z.h_integral_x1 = z.h_integral(1.5) - 1.0;
        z.h_integral_n = z.h_integral(z.n + 0.5);
        z.threshold = 2.0 - z.h_integral_inverse(z.h_integral(2.5) - z.h(2.0));
        z
    }

    /// A rank in 1..=n; rank 1 is the most popular.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        // The acceptance rate is above 90% for every s and n; the bound only guards a bug.
        for _ in 0..1000 {
            let u = self.h_integral_n + rng.next_f64() * (self.h_integral_x1 - self.h_integral_n);
            let x = self.h_integral_inverse(u);
            let k = (x + 0.5).floor().clamp(1.0, self.n);
            if k - x <= self.threshold || u >= self.h_integral(k + 0.5) - self.h(k) {
                return k as u64;
            }
        }
        1
    }

    /// h(x) = x^-s, the unnormalised density.
    fn h(&self, x: f64) -> f64 {
        (-self.s * x.ln()).exp()
    }

    /// H(x), an antiderivative of h: (x^(1-s) - 1) / (1 - s), or ln x when s = 1.
    fn h_integral(&self, x: f64) -> f64 {
        let log_x = x.ln();
        helper2((1.0 - self.s) * log_x) * log_x
    }

    fn h_integral_inverse(&self, x: f64) -> f64 {
        let t = (x * (1.0 - self.s)).max(-1.0);
        (helper1(t) * x).exp()
    }
}

/// ln(1 + x) / x, accurate near 0.
fn helper1(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))
    }
}

/// (e^x - 1) / x, accurate near 0.
fn helper2(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x * 0.5 * (1.0 + x * (1.0 / 3.0) * (1.0 + 0.25 * x))
    }
}

/// How keys are picked.
#[derive(Clone, Debug)]
pub enum KeyDist {
    Uniform { keys: u64 },
    Zipf(Zipf),
}

impl KeyDist {
    pub fn new(keys: u64, zipf_s: f64) -> KeyDist {
        if zipf_s > 0.0 {
            KeyDist::Zipf(Zipf::new(keys, zipf_s))
        } else {
            KeyDist::Uniform { keys }
        }
    }

    /// A key number in 1..=keys.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        match self {
            KeyDist::Uniform { keys } => rng.below(*keys) + 1,
            KeyDist::Zipf(z) => z.sample(rng),
        }
    }
}

/// Value length: fixed or uniform over an inclusive range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValueSize {
    pub min: usize,
    pub max: usize,
}

impl ValueSize {
    /// Parses `64` or `64-1024`.
    pub fn parse(text: &str) -> Result<ValueSize, String> {
        let parse_one = |t: &str| {
            t.trim()
                .parse::<usize>()
                .map_err(|e| format!("bad value size {t:?}: {e}"))
        };
        let (min, max) = match text.split_once('-') {
            Some((a, b)) => (parse_one(a)?, parse_one(b)?),
            None => {
                let n = parse_one(text)?;
                (n, n)
            }
        };
        if min > max {
            return Err(format!("value size range {min}-{max} is empty"));
        }
        Ok(ValueSize { min, max })
    }

    pub fn sample(&self, rng: &mut Rng) -> usize {
        if self.min == self.max {
            self.min
        } else {
            self.min + rng.below((self.max - self.min + 1) as u64) as usize
        }
    }
}

/// How keys are named: `<prefix><number>` zero-padded to at least 7 digits.
#[derive(Clone, Debug)]
pub struct KeyFormat {
    pub prefix: Vec<u8>,
    pub width: usize,
}

impl KeyFormat {
    pub const WIDTH_MIN: usize = 7;

    pub fn new(prefix: &str, keys: u64) -> KeyFormat {
        let digits = keys.max(1).to_string().len();
        KeyFormat {
            prefix: prefix.as_bytes().to_vec(),
            width: digits.max(Self::WIDTH_MIN),
        }
    }

    /// Appends key number `n` to `out`.
    pub fn push(&self, out: &mut Vec<u8>, n: u64) {
        encode_key(out, &self.prefix, n, self.width);
    }

    /// Which of `servers` owns key number `n`: FNV-1a of the key bytes, modulo.
    pub fn server_of(&self, scratch: &mut Vec<u8>, n: u64, servers: usize) -> usize {
        if servers <= 1 {
            return 0;
        }
        scratch.clear();
        self.push(scratch, n);
        (fnv1a(scratch) % servers as u64) as usize
    }
}

pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The operation mix: the probability that a request is a get.
#[derive(Clone, Copy, Debug)]
pub struct Mix {
    pub get_probability: f64,
}

impl Mix {
    /// From `--get-ratio` and `--set-ratio` taken as weights (0.9/0.1 and 9/1 mean the same).
    pub fn new(get_ratio: f64, set_ratio: f64) -> Result<Mix, String> {
        if !(get_ratio >= 0.0 && set_ratio >= 0.0) || get_ratio + set_ratio <= 0.0 {
            return Err("--get-ratio and --set-ratio must be >= 0 and not both 0".into());
        }
        Ok(Mix {
            get_probability: get_ratio / (get_ratio + set_ratio),
        })
    }

    pub fn is_get(&self, rng: &mut Rng) -> bool {
        rng.next_f64() < self.get_probability
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn harmonic(n: u64, s: f64) -> f64 {
        (1..=n).map(|k| (k as f64).powf(-s)).sum()
    }

    /// Empirical frequencies against the exact pmf, for several exponents.
    #[test]
    fn zipf_matches_pmf() {
        for &(n, s) in &[
            (100u64, 0.99f64),
            (100, 1.0),
            (50, 0.5),
            (1000, 1.5),
            (1, 1.0),
        ] {
            let z = Zipf::new(n, s);
            let mut rng = Rng::new(42);
            let samples = 400_000;
            let mut counts = vec![0u64; n as usize + 1];
            for _ in 0..samples {
                let k = z.sample(&mut rng);
                assert!((1..=n).contains(&k));
                counts[k as usize] += 1;
            }
            let norm = harmonic(n, s);
            for k in 1..=n.min(10) {
                let want = (k as f64).powf(-s) / norm;
                let got = counts[k as usize] as f64 / samples as f64;
                let tolerance = 0.05 * want + 0.002;
                assert!(
                    (got - want).abs() < tolerance,
                    "n={n} s={s} k={k}: got {got:.4}, want {want:.4}"
                );
            }
        }
    }

    #[test]
    fn zipf_large_n_is_cheap_and_skewed() {
        let z = Zipf::new(100_000_000, 0.99);
        let mut rng = Rng::new(7);
        let top = (0..100_000).filter(|_| z.sample(&mut rng) <= 100).count();
        // With s = 0.99 over 1e8 keys, the top 100 carry about 27% of requests.
        let want = harmonic(100, 0.99) / (harmonic(100_000, 0.99) + 12.0);
        let got = top as f64 / 100_000.0;
        assert!(
            got > 0.2 && got < 0.35,
            "top-100 share {got}, roughly {want}"
        );
    }

    #[test]
    fn uniform_covers_range() {
        let d = KeyDist::new(10, 0.0);
        let mut rng = Rng::new(1);
        let mut seen = [0u32; 11];
        for _ in 0..10_000 {
            seen[d.sample(&mut rng) as usize] += 1;
        }
        assert_eq!(seen[0], 0);
        assert!(seen[1..].iter().all(|&c| c > 800 && c < 1200), "{seen:?}");
    }

    #[test]
    fn key_names() {
        let f = KeyFormat::new("key:", 100_000);
        let mut out = Vec::new();
        f.push(&mut out, 1);
        assert_eq!(out, b"key:0000001");
        let f = KeyFormat::new("k-", 123_456_789);
        out.clear();
        f.push(&mut out, 42);
        assert_eq!(out, b"k-000000042");
    }

    #[test]
    fn value_sizes() {
        assert_eq!(
            ValueSize::parse("64").unwrap(),
            ValueSize { min: 64, max: 64 }
        );
        let r = ValueSize::parse("64-1024").unwrap();
        assert_eq!(r, ValueSize { min: 64, max: 1024 });
        assert!(ValueSize::parse("10-5").is_err());
        assert!(ValueSize::parse("x").is_err());
        let mut rng = Rng::new(3);
        for _ in 0..1000 {
            let n = r.sample(&mut rng);
            assert!((64..=1024).contains(&n));
        }
    }

    #[test]
    fn mix_and_servers() {
        let m = Mix::new(9.0, 1.0).unwrap();
        let mut rng = Rng::new(5);
        let gets = (0..100_000).filter(|_| m.is_get(&mut rng)).count();
        assert!((89_000..91_000).contains(&gets));
        assert!(Mix::new(0.0, 0.0).is_err());
        let f = KeyFormat::new("key:", 1000);
        let mut scratch = Vec::new();
        let mut per = [0u32; 3];
        for n in 1..=3000 {
            per[f.server_of(&mut scratch, n, 3)] += 1;
        }
        assert!(per.iter().all(|&c| c > 800), "{per:?}");
    }
}
