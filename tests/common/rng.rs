//! The seeded generator of the randomised tests (splitmix64): one stream per client or request,
//! derived from a printed seed, so a failing run replays exactly.

/// A deterministic generator; [`Rng::new`] derives stream `stream` of `seed`.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64, stream: u64) -> Rng {
        let mut rng = Rng(seed ^ stream.wrapping_add(1).wrapping_mul(0xD1B5_4A32_D192_ED03));
        rng.next();
        rng
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A number in `lo..=hi`.
    pub fn between(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// The seed in `var`, or one from the clock; printed (`<label> seed: N (replay: VAR=N)`) so that
/// any run can be replayed.
pub fn seed(label: &str, var: &str) -> u64 {
    let seed = match std::env::var(var) {
        Ok(s) if !s.trim().is_empty() => {
            s.trim().parse().unwrap_or_else(|_| panic!("{var}={s:?} is not an unsigned integer"))
        }
        _ => std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64,
    };
    println!("{label} seed: {seed} (replay: {var}={seed})");
    seed
}
