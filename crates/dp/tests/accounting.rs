//! Property tests of the zCDP arithmetic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use concord_dp::{epsilon_delta_of_rho, epsilon_delta_of_rho_tight, DpError, Rho};
use proptest::prelude::*;

proptest! {
    #[test]
    fn conversion_monotone_in_rho(r1 in 1e-6f64..10.0, r2 in 1e-6f64..10.0, delta in 1e-12f64..0.5) {
        let (a, b) = if r1 <= r2 { (r1, r2) } else { (r2, r1) };
        prop_assert!(epsilon_delta_of_rho(a, delta).unwrap() <= epsilon_delta_of_rho(b, delta).unwrap());
        let (ta, tb) = (epsilon_delta_of_rho_tight(a, delta).unwrap(), epsilon_delta_of_rho_tight(b, delta).unwrap());
        prop_assert!(ta <= tb * (1.0 + 1e-9) + 1e-12, "tight {} > {}", ta, tb);
    }

    #[test]
    fn conversion_monotone_in_delta(rho in 1e-6f64..10.0, d1 in 1e-12f64..0.5, d2 in 1e-12f64..0.5) {
        let (small, large) = if d1 <= d2 { (d1, d2) } else { (d2, d1) };
        prop_assert!(epsilon_delta_of_rho(rho, small).unwrap() >= epsilon_delta_of_rho(rho, large).unwrap());
        let (ts, tl) = (epsilon_delta_of_rho_tight(rho, small).unwrap(), epsilon_delta_of_rho_tight(rho, large).unwrap());
        prop_assert!(ts * (1.0 + 1e-9) + 1e-12 >= tl, "tight {} < {}", ts, tl);
    }

    #[test]
    fn tight_never_above_simple(rho in 0.0f64..10.0, delta in 1e-12f64..0.5) {
        let t = epsilon_delta_of_rho_tight(rho, delta).unwrap();
        prop_assert!(t >= 0.0 && t <= epsilon_delta_of_rho(rho, delta).unwrap());
    }

    #[test]
    fn budget_never_negative(start in 0.0f64..5.0, spends in proptest::collection::vec(0.0f64..1.0, 0..30)) {
        let mut budget = Rho::new(start).unwrap();
        let mut spent = Rho::ZERO;
        for s in spends {
            let cost = Rho::new(s).unwrap();
            match budget.checked_sub(cost) {
                Ok(left) => { budget = left; spent = spent.checked_add(cost).unwrap(); }
                Err(DpError::BudgetExceeded { requested, remaining }) => prop_assert!(requested > remaining),
                Err(e) => prop_assert!(false, "unexpected {}", e),
            }
            prop_assert!(budget.value() >= 0.0 && !budget.value().is_nan());
        }
        prop_assert!(spent.value() <= start * (1.0 + 1e-12) + 1e-12);
    }

    #[test]
    fn rho_rejects_bad_values(x in prop_oneof![Just(f64::NAN), Just(f64::INFINITY), -10.0f64..-1e-300]) {
        prop_assert!(Rho::new(x).is_err());
    }
}
