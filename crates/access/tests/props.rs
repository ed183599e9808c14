//! Laws of the request encoding and robustness of every parser.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use concord_access::{
    sign, verify, AccessError, AnalystPublicKey, AnalystRecord, AnalystSecretKey, Epsilon, InputCheck,
    MemoryReplayGuard, Nonce, OrderMethod, Policy, RecipientKey, Request, RequestOptions, Scheme, SignedRequest,
};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// Short strings over a two-letter alphabet, so that two requests often differ
/// only by where one field ends and the next begins.
fn short() -> impl Strategy<Value = String> {
    "[ab]{0,3}"
}

/// Every positive finite f64, by its bits.
fn epsilon() -> impl Strategy<Value = Epsilon> {
    prop_oneof![Just(0.5), Just(1.0), (1u64..0x7ff0_0000_0000_0000).prop_map(f64::from_bits)]
        .prop_map(|f| Epsilon::new(f).unwrap())
}

fn options() -> impl Strategy<Value = RequestOptions> {
    (
        proptest::option::of(0u64..3),
        proptest::option::of(prop_oneof![Just(Scheme::Additive), Just(Scheme::Shamir)]),
        proptest::option::of(0u64..3),
        proptest::option::of(prop_oneof![Just(InputCheck::Clamp), Just(InputCheck::Reject), Just(InputCheck::Off)]),
        any::<bool>(),
        proptest::option::of(prop_oneof![Just(OrderMethod::Auto), Just(OrderMethod::Search), Just(OrderMethod::Sort)]),
        proptest::option::of(epsilon()),
    )
        .prop_map(|(threshold, scheme, min_group_size, input_check, reveal_final, order_method, epsilon)| {
            RequestOptions { threshold, scheme, min_group_size, input_check, reveal_final, order_method, epsilon }
        })
}

fn request() -> impl Strategy<Value = Request> {
    (
        1u32..3,
        (short(), short(), short()),
        proptest::collection::vec(short(), 0..3),
        options(),
        (proptest::array::uniform32(0u8..2), proptest::array::uniform16(0u8..2)),
        (0u64..3, 0u64..3),
    )
        .prop_map(|(version, (analyst, sql, dataset), parties, options, (recipient, nonce), (issued, expires))| {
            Request {
                version,
                analyst,
                sql,
                dataset,
                parties,
                options,
                recipient: RecipientKey(recipient),
                nonce: Nonce(nonce),
                issued_at_ms: issued,
                expires_at_ms: expires,
            }
        })
}

/// Which fields [`mix`] takes from the second request: one or two adjacent
/// fields (to try moving the boundary between them), or about two anywhere.
fn mask() -> impl Strategy<Value = u16> {
    prop_oneof![
        (0u32..16, 1u32..3).prop_map(|(start, len)| (((1u32 << len) - 1) << start) as u16),
        (any::<u16>(), any::<u16>(), any::<u16>()).prop_map(|(x, y, z)| x & y & z),
    ]
}

/// `a` with field i taken from `c` where bit i of `mask` is set.
fn mix(a: &Request, c: &Request, mask: u16) -> Request {
    macro_rules! pick {
        ($bit:literal, $($f:ident).+) => {
            if mask & (1 << $bit) != 0 { c.$($f).+.clone() } else { a.$($f).+.clone() }
        };
    }
    Request {
        version: pick!(0, version),
        analyst: pick!(1, analyst),
        sql: pick!(2, sql),
        dataset: pick!(3, dataset),
        parties: pick!(4, parties),
        options: RequestOptions {
            threshold: pick!(5, options.threshold),
            scheme: pick!(6, options.scheme),
            min_group_size: pick!(7, options.min_group_size),
            input_check: pick!(8, options.input_check),
            reveal_final: pick!(9, options.reveal_final),
            order_method: pick!(10, options.order_method),
            epsilon: pick!(11, options.epsilon),
        },
        recipient: pick!(12, recipient),
        nonce: pick!(13, nonce),
        issued_at_ms: pick!(14, issued_at_ms),
        expires_at_ms: pick!(15, expires_at_ms),
    }
}

/// A decoder for the documented canonical format (the test's own reading of
/// the module docs of `concord_access::request`).
fn decode(bytes: &[u8]) -> Option<Request> {
    let mut rest = bytes.strip_prefix(b"concord-access-request\0")?;
    let mut take = |n: usize| -> Option<Vec<u8>> {
        let (head, tail) = rest.split_at_checked(n)?;
        rest = tail;
        Some(head.to_vec())
    };
    let mut read = Reader(&mut take);
    let version = u32::from_be_bytes(read.0(4)?.try_into().ok()?);
    let (analyst, sql, dataset) = (read.str()?, read.str()?, read.str()?);
    let parties = (0..read.u64()?).map(|_| read.str()).collect::<Option<Vec<_>>>()?;
    let threshold = read.opt(|r| r.u64())?;
    let scheme = read.opt(|r| serde_json::from_value(r.str()?.into()).ok())?;
    let min_group_size = read.opt(|r| r.u64())?;
    let input_check = read.opt(|r| serde_json::from_value(r.str()?.into()).ok())?;
    let reveal_final = read.flag()?;
    let order_method = read.opt(|r| serde_json::from_value(r.str()?.into()).ok())?;
    let epsilon = read.opt(|r| Epsilon::new(f64::from_bits(r.u64()?)).ok())?;
    let recipient = RecipientKey(read.0(32)?.try_into().ok()?);
    let nonce = Nonce(read.0(16)?.try_into().ok()?);
    let (issued_at_ms, expires_at_ms) = (read.u64()?, read.u64()?);
    let options =
        RequestOptions { threshold, scheme, min_group_size, input_check, reveal_final, order_method, epsilon };
    let r = Request { version, analyst, sql, dataset, parties, options, recipient, nonce, issued_at_ms, expires_at_ms };
    rest.is_empty().then_some(r)
}

struct Reader<'a>(&'a mut dyn FnMut(usize) -> Option<Vec<u8>>);

impl Reader<'_> {
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.0(8)?.try_into().ok()?))
    }
    fn str(&mut self) -> Option<String> {
        let n = usize::try_from(self.u64()?).ok()?;
        String::from_utf8(self.0(n)?).ok()
    }
    fn flag(&mut self) -> Option<bool> {
        match self.0(1)?.as_slice() {
            [0] => Some(false),
            [1] => Some(true),
            _ => None,
        }
    }
    fn opt<T>(&mut self, f: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.flag()? {
            f(self).map(Some)
        } else {
            Some(None)
        }
    }
}

fn config(cases: u32, seed: u64) -> ProptestConfig {
    ProptestConfig { cases, rng_seed: RngSeed::Fixed(seed), failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config(2000, 1))]

    #[test]
    fn canonical_bytes_decode_back_to_the_request(r in request()) {
        // A decoder exists, so the encoding is injective.
        prop_assert_eq!(decode(&r.canonical_bytes()), Some(r));
    }

    #[test]
    fn canonical_bytes_are_injective(a in request(), c in request(), mask in mask()) {
        let b = mix(&a, &c, mask);
        prop_assert_eq!(a == b, a.canonical_bytes() == b.canonical_bytes(), "{:?}\n{:?}", a, b);
        prop_assert_eq!(a == b, a.hash() == b.hash());
    }

    #[test]
    fn json_round_trip_preserves_the_request_and_its_hash(r in request(), seed in any::<u64>()) {
        let key = AnalystSecretKey::generate(&mut ChaCha20Rng::seed_from_u64(seed));
        let signed = sign(r, &key);
        let back = SignedRequest::from_json(&signed.to_json().unwrap()).unwrap();
        prop_assert_eq!(back.request.hash(), signed.request.hash());
        prop_assert_eq!(&back, &signed);
        let compact = serde_json::to_string(&signed).unwrap();
        prop_assert_eq!(SignedRequest::from_json(&compact).unwrap(), signed);
    }
}

proptest! {
    #![proptest_config(config(300, 2))]

    #[test]
    fn a_signed_well_formed_request_verifies(r in request(), seed in any::<u64>()) {
        let mut r = r;
        r.version = 1;
        r.analyst = format!("x{}", r.analyst);
        r.dataset = format!("d{}", r.dataset);
        r.sql = format!("SELECT {}", r.sql);
        r.parties = vec!["n1".into(), "n2".into()];
        r.expires_at_ms += r.issued_at_ms + 1;
        let key = AnalystSecretKey::generate(&mut ChaCha20Rng::seed_from_u64(seed));
        let mut reg = BTreeMap::new();
        reg.insert(r.analyst.clone(), AnalystRecord { key: key.public_key(), role: String::new(), revoked: false });
        let signed = sign(r, &key);
        let now = signed.request.issued_at_ms;
        let v = verify(&signed, &reg, now, &mut MemoryReplayGuard::new(), 10).unwrap();
        prop_assert_eq!(v.hash(), signed.request.hash());
    }

    #[test]
    fn parsers_never_panic_on_random_text(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = SignedRequest::from_json(&text);
        let _ = Policy::from_toml(&text);
        let _ = AnalystPublicKey::from_text(&text);
        let _ = AnalystSecretKey::from_text(&text);
        let _ = text.parse::<Epsilon>();
        let _ = text.parse::<Nonce>();
    }

    #[test]
    fn parsers_never_panic_on_mutated_documents(at in any::<prop::sample::Index>(), cut in 0usize..4, insert in "[\\x00-\\x7f]{0,3}") {
        let signed = sign(
            Request {
                version: 1,
                analyst: "alice".into(),
                sql: "SELECT COUNT(*) FROM t".into(),
                dataset: "t".into(),
                parties: vec!["a".into(), "b".into()],
                options: RequestOptions { epsilon: Some(Epsilon::new(0.5).unwrap()), ..Default::default() },
                recipient: RecipientKey([1; 32]),
                nonce: Nonce([2; 16]),
                issued_at_ms: 1,
                expires_at_ms: 2,
            },
            &AnalystSecretKey::from_seed([3; 32]),
        );
        let policy = "[defaults]\nmin_group_size = 3\n[[rule]]\nname = \"r\"\nanalysts = [\"alice\"]\n\
                      datasets = [\"t\"]\nfunctions = [\"COUNT\"]\napprovals = { k = 2, of = [\"a\", \"b\"] }\n";
        for doc in [signed.to_json().unwrap(), policy.to_string()] {
            let i = at.index(doc.len() + 1);
            let end = (i + cut).min(doc.len());
            let mutated = format!("{}{}{}", &doc[..i], insert, &doc[end..]);
            let _ = SignedRequest::from_json(&mutated);
            let _ = Policy::from_toml(&mutated);
        }
    }
}

#[test]
fn a_json_number_for_epsilon_is_refused_rather_than_rounded() {
    // 0.30000000000000004 needs a correctly rounding parser; the string form
    // is parsed by Rust's, which is.
    let e = Epsilon::new(0.1 + 0.2).unwrap();
    assert_eq!(e.to_string(), "0.30000000000000004");
    assert_eq!(e.to_string().parse::<Epsilon>().unwrap(), e);
    let err = SignedRequest::from_json(
        r#"{"request":{"version":1,"analyst":"a","sql":"s","dataset":"d","parties":["p"],
        "options":{"epsilon":0.30000000000000004},"recipient":"00","nonce":"00","issued_at_ms":0,"expires_at_ms":1}}"#,
    )
    .unwrap_err();
    assert!(matches!(err, AccessError::Json(ref m) if m.contains("expected a string")), "{err}");
}
