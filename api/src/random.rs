//! Random identifiers and secrets: ICE credentials, track and participant ids, webhook
//! event ids, generated API keys and TURN secrets. The caller passes the RNG (a seeded
//! one in tests and sans-IO engines, `rand::rng()` elsewhere).

use rand::Rng;
use rand::distr::Alphanumeric;

/// `len` characters from `[A-Za-z0-9]` (5.95 bits each): safe in URLs, headers, file
/// names, ICE ufrags and passwords, and YAML without quoting.
pub fn token(rng: &mut impl Rng, len: usize) -> String {
    rng.sample_iter(Alphanumeric).take(len).map(char::from).collect()
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn tokens_are_alphanumeric_of_the_length_asked_and_follow_the_seed() {
        let mut rng = StdRng::seed_from_u64(7);
        let a = token(&mut rng, 40);
        assert_eq!(a.len(), 40);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, token(&mut rng, 40), "a fresh draw");
        assert_eq!(a, token(&mut StdRng::seed_from_u64(7), 40), "the same seed, the same token");
        assert_eq!(token(&mut rng, 0), "");
    }
}
