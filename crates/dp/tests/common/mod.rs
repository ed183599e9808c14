//! Chi-square goodness of fit against an exact pmf.
#![allow(dead_code)]

/// Upper 0.999 quantile of chi-square with `df` degrees of freedom (Wilson–Hilferty).
pub fn chi2_quantile_999(df: usize) -> f64 {
    let k = df as f64;
    let z = 3.090_232_306_167_813;
    let a = 2.0 / (9.0 * k);
    k * (1.0 - a + z * a.sqrt()).powi(3)
}

/// Pearson's statistic of integer `samples` against `pmf`, with the integers whose
/// expected count is >= 5 as bins (a contiguous range around the mode for our
/// unimodal distributions) and the two tails as two more bins, merged into the edge
/// bins if their expected count is below 5. Returns (statistic, degrees of freedom).
pub fn chi_square(samples: &[i64], pmf: impl Fn(i64) -> f64, search: i64) -> (f64, usize) {
    let n = samples.len() as f64;
    let central: Vec<i64> = (-search..=search).filter(|&k| n * pmf(k) >= 5.0).collect();
    let (lo, hi) = (*central.first().unwrap(), *central.last().unwrap());
    let mut expected: Vec<f64> = (lo..=hi).map(|k| n * pmf(k)).collect();
    let below: f64 = n * (-search * 4..lo).map(&pmf).sum::<f64>();
    let above: f64 = n * (hi + 1..=search * 4).map(&pmf).sum::<f64>();
    let mut observed = vec![0f64; expected.len()];
    let (mut obs_below, mut obs_above) = (0f64, 0f64);
    for &s in samples {
        if s < lo {
            obs_below += 1.0;
        } else if s > hi {
            obs_above += 1.0;
        } else {
            observed[(s - lo) as usize] += 1.0;
        }
    }
    let mut bins: Vec<(f64, f64)> = Vec::new();
    let last = expected.len() - 1;
    if below >= 5.0 {
        bins.push((obs_below, below));
    } else {
        observed[0] += obs_below;
        expected[0] += below;
    }
    if above >= 5.0 {
        bins.push((obs_above, above));
    } else {
        observed[last] += obs_above;
        expected[last] += above;
    }
    bins.extend(observed.into_iter().zip(expected));
    let stat = bins.iter().map(|(o, e)| (o - e) * (o - e) / e).sum();
    (stat, bins.len() - 1)
}

/// Sample mean and variance.
pub fn mean_var(samples: &[i64]) -> (f64, f64) {
    let n = samples.len() as f64;
    let mean = samples.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = samples.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var)
}

/// Standard error of the sample variance: sqrt((mu4 - sigma^4) / n), from the pmf.
pub fn variance_se(pmf: impl Fn(i64) -> f64, bound: i64, n: usize) -> f64 {
    let var: f64 = (-bound..=bound).map(|k| (k * k) as f64 * pmf(k)).sum();
    let mu4: f64 = (-bound..=bound).map(|k| ((k * k) as f64).powi(2) * pmf(k)).sum();
    ((mu4 - var * var) / n as f64).sqrt()
}
