//! Fuzzed share payloads through the Shamir kernels that decode them:
//! `ShamirPlan::<M61>::open_combine`, `open_to_combine` and `reshare_recv`
//! for party `me` of a (n=3, t=1) session with PRSS streams from
//! `Prss::all_in_memory(3, ..)`. Never panics; a payload is accepted iff it
//! holds exactly the expected number of canonical elements; every error
//! about a payload names the peer it was attributed to; accepted results are
//! linear in the payloads (open) or equal own + PRSS draws + the decoded
//! payloads (reshare).
#![no_main]

use concord_math::{batch, Ring, M61};
use concord_protocol::prss::Prss;
use concord_protocol::shamir::ShamirPlan;
use concord_protocol::ProtocolError;
use concord_sharing::shamir::ShamirParams;
use libfuzzer_sys::fuzz_target;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha12Rng;

const N: usize = 3;

fn valid(payload: &[u8], len: usize) -> Option<Vec<M61>> {
    batch::decode::<M61>(payload).ok().filter(|v| v.len() == len)
}

fn names_peer(e: &ProtocolError, peer: usize, what: &str) {
    match e {
        ProtocolError::Malformed { peer: p, what: w, .. } => {
            assert_eq!(*p, peer, "{e}");
            assert_eq!(*w, what, "{e}");
        }
        other => panic!("a bad payload gave an error that names no peer: {other:?}"),
    }
    assert!(e.to_string().starts_with(&format!("party {peer} ")), "{e}");
}

fn prss(me: usize, seed: u64) -> Prss {
    let mut rng = ChaCha12Rng::seed_from_u64(seed);
    let all = Prss::all_in_memory(N, &mut rng).expect("in-memory seed agreement");
    all.into_iter().nth(me).expect("party in range")
}

/// `combine(own, [(peer, payload)])` for one of the two opening kernels.
fn check_open(
    combine: &dyn Fn(&[M61], &[(usize, &[u8])], &mut [M61]) -> Result<(), ProtocolError>,
    own: &[M61],
    peer: usize,
    payload: &[u8],
    extra: bool,
) {
    let len = own.len();
    let mut out = vec![M61::ONE; len];
    if extra {
        // Wrong number of payloads: a local error, never a panic.
        assert!(matches!(
            combine(own, &[(peer, payload), (peer, payload)], &mut out),
            Err(ProtocolError::InvalidParams(_))
        ));
        assert!(matches!(combine(own, &[], &mut out), Err(ProtocolError::InvalidParams(_))));
        let mut short = vec![M61::ZERO; len + 1];
        assert!(matches!(combine(own, &[(peer, payload)], &mut short), Err(ProtocolError::InvalidParams(_))));
    }
    match combine(own, &[(peer, payload)], &mut out) {
        Ok(()) => {
            let v = valid(payload, len).expect("accepted only a valid payload");
            // Linearity: f(own, v) = f(own, 0) + f(0, v).
            let zero_payload = batch::encode(&vec![M61::ZERO; len]);
            let zero_own = vec![M61::ZERO; len];
            let mut a = vec![M61::ZERO; len];
            let mut b = vec![M61::ZERO; len];
            combine(own, &[(peer, &zero_payload)], &mut a).expect("zero payload");
            combine(&zero_own, &[(peer, &batch::encode(&v))], &mut b).expect("re-encoded payload");
            for ((o, x), y) in out.iter().zip(&a).zip(&b) {
                assert_eq!(*o, *x + *y);
            }
        }
        Err(e) => {
            assert!(valid(payload, len).is_none(), "{e}");
            names_peer(&e, peer, "open");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // [me, len, flags, peer, seed(2)] then payload records.
    let Some((head, body)) = data.split_first_chunk::<6>() else {
        return;
    };
    let me = usize::from(head[0]) % N;
    let flags = head[2];
    // Flag bit 0 adds 4090 elements, so the streaming kernels cross their
    // 4096-element chunk (only empty or malformed payloads fit in the input).
    let len = usize::from(head[1] % 32) + if flags & 1 == 1 { 4090 } else { 0 };
    let seed = u64::from(u16::from_le_bytes([head[4], head[5]]));

    let params = ShamirParams::new::<M61>(N, 1).expect("3 parties, threshold 1");
    let plan = ShamirPlan::<M61>::new(params, me).expect("plan for a party in range");
    let own: Vec<M61> = (0..len).map(|i| M61::from_u64((i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))).collect();

    // Opening to all, and opening to us: one payload each, from the real
    // sender (flag bit 1 clear) or from any peer index in the input.
    let open_peer = if flags & 2 == 0 { plan.open_recv_from()[0] } else { usize::from(head[3]) };
    let to_peer = if flags & 2 == 0 {
        plan.open_to_senders(me).expect("party in range")[0]
    } else {
        usize::from(head[3])
    };
    let extra = flags & 4 == 4;
    check_open(&|o, r, out| plan.open_combine(o, r, out), &own, open_peer, body, extra);
    check_open(&|o, r, out| plan.open_to_combine(o, r, out), &own, to_peer, body, extra);

    // Resharing: records [peer, len, bytes...]; a len byte with the top bit
    // set takes exactly one well-formed-length payload.
    let expected_from = plan.reshare_expected_from().expect("n >= 2t + 1");
    let mut received: Vec<(usize, &[u8])> = Vec::new();
    let mut rest = body;
    while let [p, l, tail @ ..] = rest {
        let take = if l & 0x80 != 0 { len * 8 } else { usize::from(*l) }.min(tail.len());
        let (payload, tail) = tail.split_at(take);
        let peer = if flags & 8 == 0 {
            expected_from[usize::from(*p) % expected_from.len()]
        } else {
            usize::from(*p)
        };
        received.push((peer, payload));
        rest = tail;
    }
    // The PRSS part alone, from an identical copy of the streams.
    let mut prss_part = vec![M61::ZERO; len];
    plan.reshare_recv(&mut prss(me, seed), &mut prss_part, &[]).expect("no payloads");

    let mut acc = own.clone();
    match plan.reshare_recv(&mut prss(me, seed), &mut acc, &received) {
        Ok(()) => {
            let mut want: Vec<M61> = own.iter().zip(&prss_part).map(|(a, b)| *a + *b).collect();
            for (_, payload) in &received {
                let v = valid(payload, len).expect("accepted only valid payloads");
                batch::add_assign(&mut want, &v);
            }
            assert_eq!(acc, want);
        }
        Err(e) => {
            let bad = received.iter().find(|(_, p)| valid(p, len).is_none()).map(|(peer, _)| *peer);
            let bad = bad.expect("an error only for a bad payload");
            names_peer(&e, bad, "reshare");
        }
    }
});
