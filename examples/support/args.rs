//! Tiny argument parsing shared by the benchmark examples (`--name value` pairs and flags).

#![allow(dead_code)]

pub struct Args(Vec<String>);

impl Args {
    pub fn from_env() -> Args {
        Args(std::env::args().skip(1).collect())
    }

    pub fn flag(&self, name: &str) -> bool {
        self.0.iter().any(|a| a == name)
    }

    pub fn value(&self, name: &str) -> Option<&str> {
        self.0.iter().position(|a| a == name).and_then(|i| self.0.get(i + 1)).map(String::as_str)
    }

    /// A size with an optional k/m/g suffix (powers of 1024).
    pub fn bytes(&self, name: &str, default: u64) -> u64 {
        self.value(name)
            .map_or(default, |v| parse_bytes(v).unwrap_or_else(|| panic!("bad size for {name}: {v}")))
    }

    pub fn f64(&self, name: &str, default: f64) -> f64 {
        self.value(name)
            .map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("bad number for {name}: {v}")))
    }

    pub fn u64(&self, name: &str, default: u64) -> u64 {
        self.value(name)
            .map_or(default, |v| v.parse().unwrap_or_else(|_| panic!("bad number for {name}: {v}")))
    }
}

pub fn parse_bytes(v: &str) -> Option<u64> {
    let (num, mult) = match v.chars().last()? {
        'k' | 'K' => (&v[..v.len() - 1], 1 << 10),
        'm' | 'M' => (&v[..v.len() - 1], 1 << 20),
        'g' | 'G' => (&v[..v.len() - 1], 1 << 30),
        _ => (v, 1),
    };
    num.parse::<u64>().ok().map(|n| n * mult)
}
