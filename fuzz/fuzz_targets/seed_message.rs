//! Seed agreement fed arbitrary peer messages: `SeedSetup::start` for party
//! `me` of `n` (both small, from the input) with a seeded ChaCha12, then
//! `receive(from, bytes)` for arbitrary (from, bytes) pairs, then `finish`.
//! Never panics; `receive` accepts exactly a 64-byte message from party 0
//! or a 32-byte one from another lower-numbered party, and its errors name
//! the sender; `finish` succeeds iff every lower-numbered party's message
//! was accepted, and otherwise names the lowest missing one; the resulting
//! streams exist for every peer and not for ourselves.
#![no_main]

use concord_math::M61;
use concord_protocol::prss::SeedSetup;
use concord_protocol::ProtocolError;
use libfuzzer_sys::fuzz_target;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha12Rng;

const MAX_N: usize = 8;

fuzz_target!(|data: &[u8]| {
    // n, me, an 8-byte RNG seed, then records [from, len, bytes...].
    let Some((head, mut rest)) = data.split_first_chunk::<10>() else {
        return;
    };
    let n = 1 + usize::from(head[0]) % MAX_N;
    let me = usize::from(head[1]) % n;
    let mut rng = ChaCha12Rng::seed_from_u64(u64::from_le_bytes(head[2..10].try_into().unwrap_or_default()));

    let (mut setup, msgs) = SeedSetup::start(me, n, &mut rng);
    assert_eq!(setup.expected_from(), (0..me).collect::<Vec<_>>());
    let recipients: Vec<usize> = msgs.outgoing.iter().map(|(to, _)| *to).collect();
    assert_eq!(recipients, (me + 1..n).collect::<Vec<_>>());
    for (_, m) in &msgs.outgoing {
        assert_eq!(m.len(), if me == 0 { 64 } else { 32 });
    }

    let mut got = vec![false; n];
    while let [from, len, tail @ ..] = rest {
        // `from` is any byte, so out-of-range and our own index occur too.
        let from = usize::from(*from);
        let take = usize::from(*len).min(tail.len());
        let (bytes, tail) = tail.split_at(take);
        rest = tail;
        let want = if from == 0 { 64 } else { 32 };
        match setup.receive(from, bytes) {
            Ok(()) => {
                assert!(from < me && bytes.len() == want);
                got[from] = true;
            }
            Err(e) => {
                assert!(from >= me || bytes.len() != want, "{e}");
                match &e {
                    ProtocolError::Malformed { peer, what: "seed", .. } => assert_eq!(*peer, from),
                    other => panic!("seed error does not name the sender: {other:?}"),
                }
                assert!(e.to_string().starts_with(&format!("party {from} ")), "{e}");
            }
        }
    }

    let missing = (0..me).find(|&j| !got[j]);
    match setup.finish() {
        Ok(mut prss) => {
            assert_eq!(missing, None);
            assert_eq!((prss.me(), prss.n()), (me, n));
            let mut buf = [M61::default(); 4];
            for j in 0..n {
                assert_eq!(prss.fill_to::<M61>(j, &mut buf).is_ok(), j != me);
                assert_eq!(prss.fill_from::<M61>(j, &mut buf).is_ok(), j != me);
            }
            assert!(prss.fill_to::<M61>(n, &mut buf).is_err());
            assert!(prss.draw_from::<M61>(usize::MAX, 1).is_err());
        }
        Err(e) => match e {
            ProtocolError::Malformed { peer, what: "seed", .. } => assert_eq!(Some(peer), missing),
            other => panic!("unexpected finish error {other:?}"),
        },
    }
});
