//! The schedule of a run: which interval comes when.

use anyhow::Context;

use crate::stage::peers::Peer;

/// `rounds` measured rounds of `seconds` per interval, after a warm-up
/// round of `warmup` seconds.
#[derive(Debug, Clone, Copy)]
pub struct Rounds {
    pub rounds: u32,
    pub seconds: u32,
    pub warmup: u32,
}

impl Rounds {
    /// Runs every round: `interval(variant, peer, seconds)` measures one
    /// interval and `record(round, variant, peer, measured)` takes it (round
    /// 0 is the warm-up: checked, not kept). `label` names a variant in the
    /// progress line.
    pub fn run<V: Copy, I>(
        &self,
        variants: &[V],
        label: impl Fn(V) -> &'static str,
        mut interval: impl FnMut(V, Peer, u32) -> anyhow::Result<I>,
        mut record: impl FnMut(u32, V, Peer, I),
    ) -> anyhow::Result<()> {
        let rounds = self.rounds;
        eprintln!("round 0 is a warm-up, discarded");
        for round in 0..=rounds {
            let seconds = if round == 0 {
                self.warmup.max(1)
            } else {
                self.seconds
            };
            let r = usize::try_from(round).context("round")?;
            let mut order = variants.to_vec();
            if round % 2 == 1 {
                order.reverse();
            }
            for variant in order {
                for k in 0..Peer::ALL.len() {
                    let peer = Peer::ALL[(r + k) % Peer::ALL.len()];
                    eprint!(
                        "\rround {round}/{rounds}: {:<22} {:<18}",
                        label(variant),
                        peer.label()
                    );
                    let measured = interval(variant, peer, seconds)?;
                    record(round, variant, peer, measured);
                }
            }
        }
        eprintln!();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_rotate_and_variants_alternate_and_the_warm_up_comes_first() {
        let schedule = Rounds {
            rounds: 2,
            seconds: 4,
            warmup: 1,
        };
        let mut seen = Vec::new();
        schedule
            .run(
                &["a", "b"],
                |v| v,
                |v, p, s| Ok((v, p, s)),
                |round, _, _, measured| seen.push((round, measured)),
            )
            .expect("runs");
        let n = Peer::ALL.len();
        assert_eq!(seen.len(), 3 * 2 * n);
        // The warm-up: short intervals, variants in order, peers from the first.
        assert_eq!(seen[0], (0, ("a", Peer::ALL[0], 1)));
        // Round 1: variants reversed, peers starting one further, full length.
        assert_eq!(seen[2 * n], (1, ("b", Peer::ALL[1], 4)));
        assert_eq!(seen[4 * n], (2, ("a", Peer::ALL[2], 4)));
    }
}
