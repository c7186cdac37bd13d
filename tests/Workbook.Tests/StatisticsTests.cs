using Workbook.Experiments;
using Xunit.Abstractions;

namespace Workbook.Tests;

/// <summary>The seed intervals: closed forms, the range never left, and coverage computed exactly by enumerating every
/// outcome of a discrete reward distribution (and by a fixed-seed simulation for reward changes).</summary>
public class StatisticsTests(ITestOutputHelper output)
{
    static double Logit(double p) => Math.Log(p / (1 - p));

    static double Sigmoid(double t) => 1 / (1 + Math.Exp(-t));

    [Fact]
    public void Bounded_is_the_back_transformed_t_interval_on_squeezed_logits()
    {
        // [0.2, 0.5, 0.8] on [0, 1]: squeezed u = 0.01 + 0.98 x, logits ±z and 0, sd z,
        // half-width t_{0.975,2} z / sqrt 3
        double z = Logit(0.01 + 0.98 * 0.8),
            h = 4.303 * z / Math.Sqrt(3);
        var s = Stat.Bounded([0.2, 0.5, 0.8], 0, 1);
        Assert.Equal(0.5, s.Mean, 12);
        Assert.Equal((Sigmoid(-h) - 0.01) / 0.98, s.Ci95[0], 10);
        Assert.Equal((Sigmoid(h) - 0.01) / 0.98, s.Ci95[1], 10);
        // the same values on [-1, 1] (a change): the interval maps affinely
        var c = Stat.Bounded([-0.6, 0.0, 0.6], -1, 1);
        Assert.Equal(2 * s.Ci95[0] - 1, c.Ci95[0], 10);
        Assert.Equal(2 * s.Ci95[1] - 1, c.Ci95[1], 10);
        // mirror symmetry: 1 - x gives the mirrored interval
        var m = Stat.Bounded([0.9, 0.7, 0.95], 0, 1);
        var mm = Stat.Bounded([0.1, 0.3, 0.05], 0, 1);
        Assert.Equal(1 - m.Ci95[1], mm.Ci95[0], 10);
        Assert.Equal(1 - m.Ci95[0], mm.Ci95[1], 10);
        // near an end the interval is asymmetric: longer towards the middle
        Assert.True(m.Mean - m.Ci95[0] > m.Ci95[1] - m.Mean);
        // far from the ends with a small spread it is the t interval (delta method)
        var t = Stat.Of([0.49, 0.50, 0.51]);
        var b = Stat.Bounded([0.49, 0.50, 0.51], 0, 1);
        Assert.Equal(t.Ci95[0], b.Ci95[0], 3);
        Assert.Equal(t.Ci95[1], b.Ci95[1], 3);
        // one value: no interval; equal values: a point
        Assert.True(double.IsNaN(Stat.Bounded([0.3], 0, 1).Ci95[0]));
        Assert.Equal([1.0, 1.0], Stat.Bounded([1.0, 1.0, 1.0], 0, 1).Ci95);
        Assert.Equal(new[] { 0.75, double.NaN, 0.25 }, Stat.Bounded([0.75, double.NaN, 0.25], 0, 1).PerSeed);
        Assert.Equal(0.5, Stat.Bounded([0.75, double.NaN, 0.25], 0, 1).Mean, 12);
    }

    [Fact]
    public void Bounded_never_leaves_the_range_and_always_contains_the_mean()
    {
        double[][] adversarial =
        [
            [1, 1, 1],
            [0, 0, 0],
            [1, 1, 0],
            [0, 0, 1],
            [0, 1],
            [1, 1, 1, 1, 0.999999],
            [1e-15, 0, 0],
            [1 - 1e-15, 1, 1],
            [0, 1, 0, 1, 0],
            [0.999, 1, 1, 1, 1],
        ];
        foreach (var xs in adversarial)
        {
            Check(Stat.Bounded(xs, 0, 1), 0, 1, xs);
            Check(Stat.Bounded(xs.Select(x => 2 * x - 1).ToArray(), -1, 1), -1, 1, xs);
        }
        var rng = new Random(7);
        double[] special = [0, 1, 1e-12, 1 - 1e-12, 0.5];
        for (int i = 0; i < 20_000; i++)
        {
            var xs = Enumerable
                .Range(0, 2 + rng.Next(5))
                .Select(_ => rng.NextDouble() < 0.5 ? special[rng.Next(special.Length)] : rng.NextDouble())
                .ToArray();
            Check(Stat.Bounded(xs, 0, 1), 0, 1, xs);
            var d = xs.Select(x => 2 * x - 1).ToArray();
            Check(Stat.Paired(xs, xs.Reverse().ToArray(), (0, 1)), -1, 1, xs);
            Check(Stat.Bounded(d, -1, 1), -1, 1, xs);
        }

        static void Check(Stat s, double lo, double hi, double[] xs)
        {
            string at = string.Join(", ", xs);
            Assert.True(double.IsFinite(s.Ci95[0]) && double.IsFinite(s.Ci95[1]), at);
            Assert.True(
                lo <= s.Ci95[0] && s.Ci95[0] <= s.Mean && s.Mean <= s.Ci95[1] && s.Ci95[1] <= hi,
                $"[{s.Ci95[0]}, {s.Ci95[1]}] mean {s.Mean} for {at}"
            );
        }
    }

    [Fact]
    public void Bounded_rejects_values_outside_the_range_and_a_bad_range()
    {
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => Stat.Bounded([0.5, 1.2], 0, 1));
        Assert.Contains("1.2", e.Message);
        Assert.Throws<ArgumentException>(() => Stat.Bounded([0.5], 1, 0));
        Assert.Throws<ArgumentException>(() => Stat.Bounded([0.5], 0, double.PositiveInfinity));
    }

    /// <summary>The probability of each count k of m prompts solved when a seed's success rate is p_j with weight
    /// w_j.</summary>
    static double[] MixtureOfBinomials(int m, double[] p, double[] w)
    {
        var q = new double[m + 1];
        for (int k = 0; k <= m; k++)
        for (int j = 0; j < p.Length; j++)
            q[k] += w[j] * Math.Exp(LogChoose(m, k) + k * Math.Log(p[j]) + (m - k) * Math.Log(1 - p[j]));
        return q;
    }

    static double LogChoose(int n, int k)
    {
        double s = 0;
        for (int i = 1; i <= k; i++)
            s += Math.Log(n - k + i) - Math.Log(i);
        return s;
    }

    /// <summary>Exact coverage of the true mean: every multiset of n outcomes, weighted by its multinomial
    /// probability.</summary>
    static double ExactCoverage(double[] q, int n, double mu, Func<double[], (double lo, double hi)> interval)
    {
        int m = q.Length - 1;
        double cover = 0;
        var ks = new int[n];
        void Rec(int pos, int min)
        {
            if (pos == n)
            {
                double logP = LogFactorial(n);
                foreach (var g in ks.GroupBy(k => k))
                    logP += g.Count() * Math.Log(q[g.Key]) - LogFactorial(g.Count());
                var (lo, hi) = interval(ks.Select(k => (double)k / m).ToArray());
                if (lo <= mu && mu <= hi)
                    cover += Math.Exp(logP);
                return;
            }
            for (int k = min; k <= m; k++)
            {
                ks[pos] = k;
                Rec(pos + 1, k);
            }
        }
        Rec(0, 0);
        return cover;
    }

    static double LogFactorial(int n) => Enumerable.Range(1, n).Sum(i => Math.Log(i));

    [Theory]
    [InlineData("middle", 0.4, 0.5, 0.6)]
    [InlineData("near 1", 0.88, 0.93, 0.98)]
    [InlineData("near 0", 0.02, 0.07, 0.12)]
    public void Bounded_covers_the_mean_reward_exactly_enumerated(string where, double p1, double p2, double p3)
    {
        // a seed's reward is the share of 24 held-out prompts solved; seeds differ in their success rate (three levels)
        double[] p = [p1, p2, p3],
            w = [0.25, 0.5, 0.25];
        var q = MixtureOfBinomials(24, p, w);
        double mu = p.Zip(w).Sum(x => x.First * x.Second);
        foreach (int n in new[] { 3, 4, 5 })
        {
            double bounded = ExactCoverage(
                q,
                n,
                mu,
                xs =>
                {
                    var s = Stat.Bounded(xs, 0, 1);
                    return (s.Ci95[0], s.Ci95[1]);
                }
            );
            double clipped = ExactCoverage(
                q,
                n,
                mu,
                xs =>
                {
                    var s = Stat.Of(xs);
                    return (Math.Max(0, s.Ci95[0]), Math.Min(1, s.Ci95[1]));
                }
            );
            output.WriteLine($"{where}, {n} seeds: coverage bounded {bounded:F4}, clipped t {clipped:F4}");
            Assert.InRange(bounded, 0.93, 0.995);
            Assert.True(
                bounded >= clipped - 0.005,
                $"{where}, {n} seeds: bounded {bounded:F4} against clipped t {clipped:F4}"
            );
        }
    }

    [Fact]
    public void Bounded_covers_a_reward_change_in_simulation()
    {
        // a change = reward after - reward before (24 prompts each), both success rates varying over seeds
        var rng = new Random(11);
        double Binom(double p) => Enumerable.Range(0, 24).Count(_ => rng.NextDouble() < p) / 24.0;
        foreach (var (before, after) in new[] { (0.3, 0.8), (0.9, 0.2), (0.05, 0.95) })
        {
            double mu = after - before;
            foreach (int n in new[] { 3, 5 })
            {
                int hit = 0,
                    runs = 20_000;
                for (int r = 0; r < runs; r++)
                {
                    var xs = Enumerable
                        .Range(0, n)
                        .Select(_ =>
                        {
                            double jitter = (rng.NextDouble() - 0.5) * 0.08; // seed-to-seed spread of the success rates
                            return Binom(Math.Clamp(after + jitter, 0, 1)) - Binom(Math.Clamp(before - jitter, 0, 1));
                        })
                        .ToArray();
                    var s = Stat.Bounded(xs, -1, 1);
                    if (s.Ci95[0] <= mu && mu <= s.Ci95[1])
                        hit++;
                }
                output.WriteLine($"change {mu:+0.00;-0.00}, {n} seeds: coverage {(double)hit / runs:F4}");
                Assert.InRange((double)hit / runs, 0.93, 0.995);
            }
        }
    }

    [Fact]
    public void Paired_differences_get_the_t_interval()
    {
        // differences [1, 2, 3]: mean 2, sd 1, half-width t_{0.975,2} / sqrt 3
        var s = Stat.Paired([1.5, 2.5, 4.0], [0.5, 0.5, 1.0]);
        Assert.Equal(2.0, s.Mean, 12);
        Assert.Equal(2 - 4.303 / Math.Sqrt(3), s.Ci95[0], 10);
        Assert.Equal(2 + 4.303 / Math.Sqrt(3), s.Ci95[1], 10);
        Assert.Equal([1.0, 2.0, 3.0], s.PerSeed);
        // seeds that move together: pairing resolves a difference the unpaired intervals cannot
        double[] a = [0.30, 0.62, 0.45],
            b = [0.25, 0.58, 0.40];
        Assert.True(Stat.Paired(a, b).AboveZero);
        Assert.True(Stat.Of(a).Ci95[0] < Stat.Of(b).Ci95[1]);
        // a NaN on either side drops that seed from the interval but keeps its place
        var n = Stat.Paired([1.0, double.NaN, 3.0, 4.0], [0.0, 0.0, 0.0, double.NaN]);
        Assert.Equal(2.0, n.Mean, 12);
        Assert.True(double.IsNaN(n.PerSeed[1]) && double.IsNaN(n.PerSeed[3]));
        Assert.Equal(Stat.Of([1.0, 3.0]).Ci95, n.Ci95);
        // a bounded metric: the difference stays in [-1, 1]
        var r = Stat.Paired([1.0, 1.0, 0.9], [0.0, 0.0, 0.1], (0, 1));
        Assert.True(r.Ci95[0] >= -1 && r.Ci95[1] <= 1 && r.Ci95[0] <= r.Mean);
    }

    [Fact]
    public void Seeds_that_all_agree_give_a_zero_width_interval_that_says_so_and_never_separates()
    {
        static string F(double x) => x.ToString("+0.000;-0.000", System.Globalization.CultureInfo.InvariantCulture);
        // 0.1 three times: the mean is not bit-equal to 0.1, so the t half-width is about 1e-17, not exactly 0
        var same = Stat.Of([0.1, 0.1, 0.1]);
        Assert.True(same.ZeroSpread);
        Assert.False(same.AboveZero);
        Assert.Equal("[+0.100, +0.100], zero width: every seed gave the same value", same.Interval(F));
        Assert.Equal("an interval of zero width, which cannot separate it from zero", same.Unseparated);
        // a reward change of -6/48 on both seeds, as differences of k/48 rewards, through the bounded interval
        var reward = Stat.Paired([30 / 48.0, 36 / 48.0], [36 / 48.0, 42 / 48.0], (0, 1));
        Assert.True(reward.ZeroSpread);
        Assert.False(reward.BelowZero);
        Assert.Equal("the CIs separate neither coordinate", PairedVerdict.Of(Stat.Of([0.5, -0.5]), reward));
        // a missing seed is left out; one seed that differs is spread
        Assert.True(Stat.Of([0.2, double.NaN, 0.2]).ZeroSpread);
        var spread = Stat.Of([0.1, 0.1, 0.1001]);
        Assert.False(spread.ZeroSpread);
        Assert.True(spread.AboveZero);
        Assert.Equal("an interval that does not exclude zero", Stat.Of([-0.1, 0.2]).Unseparated);
        Assert.False(Stat.Of([0.3]).ZeroSpread);
        Assert.Equal("no interval", Stat.Of([0.3]).Interval(F));
        Assert.Equal("under two seeds, so no interval to test it", Stat.Of([0.3]).Unseparated);
        // summary.json marks it
        Assert.True(Summary.StatJson(same)["zero_spread"]!.GetValue<bool>());
        Assert.Null(Summary.StatJson(spread)["zero_spread"]);
    }

    [Fact]
    public void Paired_needs_the_same_seeds_on_both_sides()
    {
        Assert.Throws<ArgumentException>(() => Stat.Paired([1.0, 2.0], [1.0]));
        var e = Assert.Throws<ArgumentException>(() =>
            Stat.Paired(
                new Dictionary<long, double> { [1000] = 1, [1001] = 2 },
                new Dictionary<long, double> { [1000] = 0, [1002] = 0 }
            )
        );
        Assert.Contains("1001", e.Message);
        Assert.Contains("1002", e.Message);
        // matched by seed number, not by position
        var s = Stat.Paired(
            new Dictionary<long, double> { [1001] = 2, [1000] = 1 },
            new Dictionary<long, double> { [1000] = 0, [1001] = 0.5 }
        );
        Assert.Equal([1.0, 1.5], s.PerSeed);
    }

    [Fact]
    public void AtMost_cuts_only_the_upper_end_of_the_t_interval_and_rejects_values_above_the_bound()
    {
        // 0.76 ± 12.706 · sd / sqrt(2) for shares 1.0 and 0.52: the t interval reaches 3.8, a share cannot pass 1
        var s = Stat.AtMost([1.0, 0.52], 1);
        var t = Stat.Of([1.0, 0.52]);
        Assert.Equal(t.Mean, s.Mean, 12);
        Assert.Equal(t.Ci95[0], s.Ci95[0], 12);
        Assert.True(t.Ci95[1] > 1);
        Assert.Equal(1, s.Ci95[1]);
        // an interval already below the bound is untouched
        var u = Stat.AtMost([0.2, 0.3, 0.25], 1);
        Assert.Equal(Stat.Of([0.2, 0.3, 0.25]).Ci95, u.Ci95);
        Assert.True(double.IsNaN(Stat.AtMost([0.4], 1).Ci95[1]));
        // the message does not depend on the machine's culture (a German one writes 1,2)
        var culture = System.Globalization.CultureInfo.CurrentCulture;
        System.Globalization.CultureInfo.CurrentCulture = new System.Globalization.CultureInfo("de-DE");
        try
        {
            var e = Assert.Throws<ArgumentOutOfRangeException>(() => Stat.AtMost([0.5, 1.2], 1));
            Assert.Contains("1.2 is above 1", e.Message);
        }
        finally
        {
            System.Globalization.CultureInfo.CurrentCulture = culture;
        }
    }
}
