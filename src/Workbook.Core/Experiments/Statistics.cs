// Intervals over seeds (3-5 per pipeline, each one number per seed):
//  1. Stat.Of: the mean with a two-sided 95% Student-t interval (the seeds are the sample; NaN seeds are skipped).
//  2. Stat.Bounded: for a metric with a known range (a reward mean in [0, 1], a reward change in [-1, 1]) a Student-t
//     interval on the logits of the values rescaled to [0, 1], mapped back, so it never leaves the range and is
//     asymmetric near an end. Values at an end are pulled in by 1% of the range first so their logits are finite.
//     Chosen over a percentile bootstrap, which under-covers badly with 3 seeds (it ignores the t quantile), and over a
//     clipped t interval: enumerated exactly for 3-5 seeds of binomial rewards, it covers 0.94-0.96 near an end where
//     the clipped one covers 0.91-0.94 (StatisticsTests). No seed interval helps when every seed sits at an end.
//  3. Stat.Paired: pipelines share the base model per seed, so they are compared by per-seed differences a - b with a
//     t interval (bounded when the metric is); the seed lists must be equal.
//  4. Stat.AtMost: for a metric with only an upper bound (a share of a maximum over the same points) the t interval
//     cut at the bound. The mean cannot pass the bound, so the cut never changes whether the interval covers it; any
//     under-coverage is the t interval's own with skewed values. No transform maps a half-line to the logit's range
//     without a scale to choose, so there is no bounded version.
namespace Workbook.Experiments;

/// <summary>Mean with a two-sided 95% confidence interval over seeds, and the per-seed values (NaN where
/// missing).</summary>
public sealed record Stat(double Mean, double[] Ci95, double[] PerSeed)
{
    // t_{0.975, df} for df = 1..30; beyond that the normal 1.96
    static readonly double[] T975 =
    [
        12.706,
        4.303,
        3.182,
        2.776,
        2.571,
        2.447,
        2.365,
        2.306,
        2.262,
        2.228,
        2.201,
        2.179,
        2.160,
        2.145,
        2.131,
        2.120,
        2.110,
        2.101,
        2.093,
        2.086,
        2.080,
        2.074,
        2.069,
        2.064,
        2.060,
        2.056,
        2.052,
        2.048,
        2.045,
        2.042,
    ];

    /// <summary>How far values at an end of the range are pulled in (a fraction of the range) before the
    /// logit.</summary>
    public const double BoundedSqueeze = 0.01;

    public static double TQuantile975(int df) =>
        df < 1 ? double.NaN
        : df <= 30 ? T975[df - 1]
        : 1.96;

    public static Stat Of(IReadOnlyList<double> xs)
    {
        var v = xs.Where(double.IsFinite).ToArray();
        if (v.Length == 0)
            return new Stat(double.NaN, [double.NaN, double.NaN], xs.ToArray());
        double mean = v.Average();
        if (v.Length == 1)
            return new Stat(mean, [double.NaN, double.NaN], xs.ToArray());
        double h = HalfWidth(v, mean);
        return new Stat(mean, [mean - h, mean + h], xs.ToArray());
    }

    static double HalfWidth(double[] v, double mean) =>
        TQuantile975(v.Length - 1)
        * Math.Sqrt(v.Sum(x => (x - mean) * (x - mean)) / (v.Length - 1))
        / Math.Sqrt(v.Length);

    /// <summary>Mean and a 95% interval inside [lo, hi] for a metric that cannot leave that range (see the file
    /// header). The mean is the plain mean of the finite values; the interval always contains it.</summary>
    public static Stat Bounded(IReadOnlyList<double> xs, double lo, double hi)
    {
        if (!(double.IsFinite(lo) && double.IsFinite(hi) && lo < hi))
            throw new ArgumentException(
                FormattableString.Invariant($"Stat.Bounded: the range must be finite with lo < hi (got [{lo}, {hi}])")
            );
        var v = xs.Where(double.IsFinite).ToArray();
        // a value outside the range is a bug upstream, not something to clip silently
        if (v.FirstOrDefault(x => x < lo || x > hi, double.NaN) is var bad && !double.IsNaN(bad))
            throw new ArgumentOutOfRangeException(
                nameof(xs),
                FormattableString.Invariant($"Stat.Bounded: value {bad} is outside [{lo}, {hi}]")
            );
        if (v.Length == 0)
            return new Stat(double.NaN, [double.NaN, double.NaN], xs.ToArray());
        double mean = v.Average();
        if (v.Length == 1)
            return new Stat(mean, [double.NaN, double.NaN], xs.ToArray());
        if (v.All(x => x == v[0]))
            return new Stat(mean, [mean, mean], xs.ToArray());
        double w = hi - lo,
            e = BoundedSqueeze;
        var z = v.Select(x => Logit(e + (1 - 2 * e) * (x - lo) / w)).ToArray();
        double zm = z.Average(),
            h = HalfWidth(z, zm);
        double Back(double t) => Math.Clamp(lo + w * (Sigmoid(t) - e) / (1 - 2 * e), lo, hi);
        return new Stat(mean, [Math.Min(Back(zm - h), mean), Math.Max(Back(zm + h), mean)], xs.ToArray());
    }

    /// <summary>Mean and a Student-t interval for a metric that cannot exceed <paramref name="hi"/> but has no lower
    /// bound (a share of a maximum over the same points: Φ at one step over the best Φ, which may be negative), with
    /// the interval's upper end cut at hi (file header, 4).</summary>
    public static Stat AtMost(IReadOnlyList<double> xs, double hi)
    {
        if (xs.FirstOrDefault(x => double.IsFinite(x) && x > hi + 1e-9, double.NaN) is var bad && !double.IsNaN(bad))
            throw new ArgumentOutOfRangeException(
                nameof(xs),
                FormattableString.Invariant($"Stat.AtMost: value {bad} is above {hi}")
            );
        var st = Of(xs);
        return double.IsFinite(st.Ci95[1]) ? st with { Ci95 = [st.Ci95[0], Math.Min(st.Ci95[1], hi)] } : st;
    }

    /// <summary>Per-seed differences a[i] - b[i] (the lists in the same seed order) with a Student-t interval; a
    /// seed where either value is NaN gives a NaN difference, which is kept in PerSeed and left out of the interval.
    /// With <paramref name="range"/> (the range of a and b's metric) the difference lies in [lo - hi, hi - lo] and gets
    /// the bounded interval.</summary>
    public static Stat Paired(IReadOnlyList<double> a, IReadOnlyList<double> b, (double lo, double hi)? range = null)
    {
        if (a.Count != b.Count)
            throw new ArgumentException(
                $"Stat.Paired: {a.Count} values against {b.Count}; "
                    + "a paired comparison needs one value per seed on both sides"
            );
        var d = a.Zip(b, (x, y) => double.IsFinite(x) && double.IsFinite(y) ? x - y : double.NaN).ToArray();
        return range is { } r ? Bounded(d, r.lo - r.hi, r.hi - r.lo) : Of(d);
    }

    /// <summary>Paired by seed number: both sides must have exactly the same seeds (in any order); PerSeed follows the
    /// seeds in ascending order.</summary>
    public static Stat Paired(
        IReadOnlyDictionary<long, double> a,
        IReadOnlyDictionary<long, double> b,
        (double lo, double hi)? range = null
    )
    {
        var sa = a.Keys.Order().ToArray();
        var sb = b.Keys.Order().ToArray();
        if (!sa.SequenceEqual(sb))
            throw new ArgumentException(
                $"Stat.Paired: the seed lists differ (seeds {string.Join(", ", sa)} against "
                    + $"{string.Join(", ", sb)}); a paired comparison needs the same seeds on both sides"
            );
        return Paired(sa.Select(s => a[s]).ToArray(), sa.Select(s => b[s]).ToArray(), range);
    }

    static double Logit(double p) => Math.Log(p / (1 - p));

    static double Sigmoid(double t) => 1 / (1 + Math.Exp(-t));

    /// <summary>At least two seeds and all of them the same value (to 1e-9), so the t interval has zero width. With a
    /// few seeds and coarse metrics (a reward over 48 prompts moves in steps of 1/48) that is a coincidence, not
    /// certainty: such an interval is written as zero width and never counted as separated from zero.</summary>
    public bool ZeroSpread =>
        PerSeed.Where(double.IsFinite).ToArray() is { Length: >= 2 } v
        && v.Max() - v.Min() <= 1e-9 * Math.Max(1, Math.Abs(v[0]));

    public bool AboveZero => !ZeroSpread && Ci95[0] > 0;

    public bool BelowZero => !ZeroSpread && Ci95[1] < 0;

    /// <summary>Why a value is not separated from zero: no interval (under two seeds), an interval with no spread,
    /// or one that reaches zero.</summary>
    public string Unseparated =>
        !double.IsFinite(Ci95[0]) ? "under two seeds, so no interval to test it"
        : ZeroSpread ? "an interval of zero width, which cannot separate it from zero"
        : "an interval that does not exclude zero";

    /// <summary>The interval in the caller's number format: "[lo, hi]"; "no interval" under two seeds; and, when the
    /// seeds have no spread, "[x, x], zero width: every seed gave the same value".</summary>
    public string Interval(Func<double, string> f) =>
        !double.IsFinite(Ci95[0]) ? "no interval"
        : ZeroSpread ? $"[{f(Ci95[0])}, {f(Ci95[1])}], zero width: every seed gave the same value"
        : $"[{f(Ci95[0])}, {f(Ci95[1])}]";
}
