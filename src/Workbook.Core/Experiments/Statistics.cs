namespace Workbook.Experiments;

/// <summary>Mean with a two-sided 95% Student-t confidence interval over seeds.</summary>
public sealed record Stat(double Mean, double[] Ci95, double[] PerSeed)
{
    // t_{0.975, df} for df = 1..30; beyond that the normal 1.96
    static readonly double[] T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042];

    public static double TQuantile975(int df) => df < 1 ? double.NaN : df <= 30 ? T975[df - 1] : 1.96;

    public static Stat Of(IReadOnlyList<double> xs)
    {
        var v = xs.Where(double.IsFinite).ToArray();
        if (v.Length == 0) return new Stat(double.NaN, [double.NaN, double.NaN], xs.ToArray());
        double mean = v.Average();
        if (v.Length == 1) return new Stat(mean, [double.NaN, double.NaN], xs.ToArray());
        double sd = Math.Sqrt(v.Sum(x => (x - mean) * (x - mean)) / (v.Length - 1));
        double h = TQuantile975(v.Length - 1) * sd / Math.Sqrt(v.Length);
        return new Stat(mean, [mean - h, mean + h], xs.ToArray());
    }

    /// <summary>PLACEHOLDER: t interval clipped to [lo, hi] (to be replaced by the statistics work).</summary>
    public static Stat Bounded(IReadOnlyList<double> xs, double lo, double hi)
    {
        var s = Of(xs);
        return s with { Ci95 = [Math.Clamp(s.Ci95[0], lo, hi), Math.Clamp(s.Ci95[1], lo, hi)] };
    }

    /// <summary>PLACEHOLDER: per-seed differences a − b with a t interval.</summary>
    public static Stat Paired(IReadOnlyList<double> a, IReadOnlyList<double> b) => Of(a.Zip(b, (x, y) => x - y).ToArray());

    public bool AboveZero => Ci95[0] > 0;
    public bool BelowZero => Ci95[1] < 0;
}
