using Workbook.Theory;

namespace Workbook.Tests;

/// <summary>The landscape view (our reconstruction, notes/paper.md §3) on a softmax-linear policy.</summary>
public class LandscapeTests
{
    [Fact]
    public void Analytic_gradients_match_finite_differences_and_the_optima_are_stationary()
    {
        var m = new SoftmaxLinear(n: 6, k: 3, d: 4, beta: 0.7, seed: 4);
        var W = Linalg.Add(m.WStar, Linalg.Random(3, 4, 9), 0.3);
        var gS = m.SftGrad(W);
        var gJ = m.ObjectiveGrad(W);
        double h = 1e-6;
        for (int a = 0; a < 3; a++)
        for (int j = 0; j < 4; j++)
        {
            var e = new double[3, 4];
            e[a, j] = 1;
            Assert.Equal((m.SftLoss(Linalg.Add(W, e, h)) - m.SftLoss(Linalg.Add(W, e, -h))) / (2 * h), gS[a, j], 7);
            Assert.Equal((m.Objective(Linalg.Add(W, e, h)) - m.Objective(Linalg.Add(W, e, -h))) / (2 * h), gJ[a, j], 7);
        }
        Assert.True(Linalg.Norm(m.SftGrad(m.WStar)) < 1e-12);
        Assert.True(Linalg.Norm(m.ObjectiveGrad(m.RlOptimum)) < 1e-10);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void Rl_from_the_sft_optimum_raises_the_sft_loss_within_the_smoothness_bound(int seed)
    {
        var m = new SoftmaxLinear(n: 12, k: 4, d: 5, beta: 0.5, seed: seed);
        var r = Landscape.RlFromSftOptimum(m, steps: 40, lambda: 1.0);
        Assert.Equal(0, r.UpperBoundViolations); // rigorous: ℓ_S = ½ λ_max(Σ q φφᵀ)
        Assert.Equal(0, r.ContractionViolations); // with the PL constants measured on this trajectory
        Assert.All(r.Trajectory.Skip(1), p => Assert.True(p.SftGap > 0)); // RL leaves the SFT optimum: the loss rises
        Assert.True(r.Trajectory[^1].ObjectiveGap < r.Trajectory[0].ObjectiveGap);
        Assert.True(r.MeasuredTStar < 40); // with λ = 1 the best stopping time is early
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void When_the_sufficient_condition_holds_an_rl_step_lowers_the_sft_loss_and_the_gap_exceeds_the_threshold(
        int seed
    )
    {
        var m = new SoftmaxLinear(n: 12, k: 4, d: 5, beta: 0.5, seed: seed);
        var eta = 1 / m.ObjectiveCurvature(m.WStar);
        var c = Landscape.OneStepThreshold(m, eta, trials: 300, seed: seed);
        Assert.True(c.SufficientHeld > 5, "the check would be vacuous");
        Assert.Equal(0, c.SufficientButNotDecreased);
        Assert.Equal(0, c.SufficientButGapBelowThreshold);
    }

    [Fact]
    public void Spectral_concentration_bounds_the_gradient_misalignment()
    {
        var rng = new Random(11);
        int checkedCases = 0;
        for (int trial = 0; trial < 300; trial++)
        {
            int n = 6;
            // PSD M with a dominant direction; a and b mostly along it
            var U = Linalg.SymmetricEigen(Gram(Linalg.Random(n, n, trial))).vectors;
            var lam = Enumerable
                .Range(0, n)
                .Select(i => i == 0 ? 10.0 + rng.NextDouble() * 50 : rng.NextDouble())
                .ToArray();
            var M = new double[n, n];
            for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++)
            for (int k = 0; k < n; k++)
                M[i, j] += U[i, k] * lam[k] * U[j, k];
            double[] Vec(double sign) =>
                Enumerable.Range(0, n).Select(i => sign * 3 * U[i, 0] + (rng.NextDouble() - 0.5)).ToArray();
            var (cos, eps, bound) = Landscape.SpectralConcentration(M, Vec(1), Vec(rng.Next(2) == 0 ? 1 : -1));
            if (eps >= 0.5)
                continue;
            checkedCases++;
            Assert.True(cos >= bound - 1e-12, $"trial {trial}: |cos| {cos} < 1 - 2ε = {bound}");
        }
        Assert.True(checkedCases > 200);
    }

    static double[,] Gram(double[,] a)
    {
        int n = a.GetLength(0);
        var g = new double[n, n];
        for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
        for (int k = 0; k < a.GetLength(1); k++)
            g[i, j] += a[i, k] * a[j, k];
        return g;
    }
}

/// <summary>Power iteration on per-example gradients and the misalignment lemma in parameter space.</summary>
public class SpectralTests
{
    static List<double[]> Vectors(Random rng, int n, int d, double spread)
    {
        var dir = Enumerable.Range(0, d).Select(_ => rng.NextDouble() - 0.5).ToArray();
        return Enumerable
            .Range(0, n)
            .Select(_ =>
            {
                double c = rng.NextDouble() * 2 - 1;
                return dir.Select(x => c * x + spread * (rng.NextDouble() - 0.5)).ToArray();
            })
            .ToList();
    }

    [Fact]
    public void Power_iteration_finds_the_top_eigenvalue_of_the_gram_matrix()
    {
        var rng = new Random(5);
        for (int trial = 0; trial < 20; trial++)
        {
            var g = Vectors(rng, 6, 40, 0.3 + trial * 0.05);
            // the nonzero spectrum of Σ g gᵀ (d×d) is that of the Gram matrix (n×n), diagonalised by Jacobi
            var K = new double[6, 6];
            for (int i = 0; i < 6; i++)
            for (int j = 0; j < 6; j++)
                K[i, j] = g[i].Zip(g[j]).Sum(z => z.First * z.Second);
            double top = Linalg.SymmetricEigen(K).values.Max();
            var (lam, u, _) = Spectral.TopEigen(g, maxIterations: 2000, tol: 1e-14, seed: trial);
            Assert.Equal(top, lam, 8);
            Assert.Equal(1.0, Math.Sqrt(u.Sum(x => x * x)), 12);
        }
    }

    [Fact]
    public void The_cosine_bound_from_concentration_holds_and_is_tight_when_concentrated()
    {
        var rng = new Random(8);
        int informative = 0;
        for (int trial = 0; trial < 300; trial++)
        {
            var g = Vectors(rng, 8, 30, Math.Exp(rng.NextDouble() * 5 - 5));
            var s = Spectral.Estimate(g.Take(4).ToList(), g.Skip(4).ToList(), seed: trial);
            Assert.True(Math.Abs(s.Cos) >= s.CosBound - 1e-12, $"trial {trial}: |cos| {s.Cos} < bound {s.CosBound}");
            Assert.InRange(s.TopFraction, 1.0 / 8 - 1e-12, 1 + 1e-12);
            if (s.CosBound > 0.9)
                informative++;
        }
        Assert.True(informative > 50, $"only {informative} concentrated instances");
    }
}
