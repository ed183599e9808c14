//! Secure sums over the simulated network reconstruct to the exact totals.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use concord_analytics::{party, reconstruct, PartyOutcome, Scheme};
use concord_net::sim::{self, LinkParams};
use concord_net::Transport;
use concord_query::Domain;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha12Rng;

fn run(n: usize, scheme: Scheme, domain: Domain, locals: Vec<Vec<i128>>) -> Vec<PartyOutcome> {
    let nets = sim::network(n, LinkParams::default(), 3).unwrap();
    let handles: Vec<_> = nets
        .into_iter()
        .zip(locals)
        .map(|(net, local)| {
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
                let mut rng = ChaCha12Rng::seed_from_u64(net.me() as u64 + 40);
                rt.block_on(party(net, scheme, domain, &local, &mut rng)).unwrap()
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn totals_are_exact_for_every_scheme_and_party_count() {
    for (n, scheme, domain) in [
        (2, Scheme::Additive, Domain::M61),
        (3, Scheme::Shamir { t: 1 }, Domain::M61),
        (3, Scheme::Additive, Domain::M127),
        (5, Scheme::Shamir { t: 2 }, Domain::M127),
        (7, Scheme::Shamir { t: 3 }, Domain::M61),
        (7, Scheme::Shamir { t: 1 }, Domain::M61),
    ] {
        let locals: Vec<Vec<i128>> =
            (0..n).map(|p| vec![p as i128 * 1000 - 7, -(p as i128), 123_456_789 * p as i128, 0]).collect();
        let expect: Vec<i128> = (0..4).map(|k| locals.iter().map(|v| v[k]).sum()).collect();
        let out = run(n, scheme, domain, locals);
        let shares: Vec<_> = out.iter().map(|o| &o.share).collect();
        assert_eq!(reconstruct(&shares).unwrap(), expect, "n={n} {scheme:?} {domain:?}");
        if let Scheme::Shamir { t } = scheme {
            // Any t + 1 shares suffice, and t do not.
            let some: Vec<_> = out.iter().rev().take(t + 1).map(|o| &o.share).collect();
            assert_eq!(reconstruct(&some).unwrap(), expect);
            let few: Vec<_> = out.iter().take(t).map(|o| &o.share).collect();
            assert!(reconstruct(&few).is_err());
        } else {
            let few: Vec<_> = out.iter().take(n - 1).map(|o| &o.share).collect();
            assert!(reconstruct(&few).is_err());
        }
        // No single party's share is the total.
        for o in &out {
            assert!(format!("{:?}", o.share).contains("redacted"));
        }
    }
}

#[test]
fn additive_sums_need_no_messages_beyond_setup() {
    let out = run(3, Scheme::Additive, Domain::M61, vec![vec![1, 2], vec![3, 4], vec![5, 6]]);
    for o in &out {
        // Seed agreement (1 round) and the final confirmation (1 round) only.
        assert_eq!(o.stats.rounds, 2, "{:?}", o.stats);
    }
}

#[test]
fn values_beyond_the_domain_are_refused() {
    let nets = sim::network(2, LinkParams::default(), 3).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let mut rng = ChaCha12Rng::seed_from_u64(1);
    let net = nets.into_iter().next().unwrap();
    let r = rt.block_on(party(net, Scheme::Additive, Domain::M61, &[1i128 << 100], &mut rng));
    assert!(r.is_err());
}

#[test]
fn shamir_sums_take_three_rounds_whatever_the_party_count() {
    for n in [3usize, 5, 7] {
        let out = run(n, Scheme::Shamir { t: (n - 1) / 2 }, Domain::M61, (0..n).map(|p| vec![p as i128; 3]).collect());
        for o in &out {
            // Seed agreement, all inputs at once, final confirmation.
            assert!(o.stats.rounds <= 3, "n={n}: {:?}", o.stats);
        }
    }
}
