// Charts for the theory notebook: C1(β) against β on a log-log scale with the two asymptotes, from the exact tabular
// computation (Theory/Tabular.cs), and the measured SFT-loss increase of the exact tilted policy on top.
using Plotly.NET;
using Plotly.NET.CSharp;
using Workbook.Theory;
using Chart = Plotly.NET.CSharp.Chart;

namespace Workbook.Charts;

public static class TheoryCharts
{
    public static double[] LogSpace(double lo, double hi, int n) =>
        Enumerable
            .Range(0, n)
            .Select(i => Math.Exp(Math.Log(lo) + (Math.Log(hi) - Math.Log(lo)) * i / (n - 1)))
            .ToArray();

    public static GenericChart C1VersusBeta(TabularProblem t, double[] betas)
    {
        var c1 = betas.Select(b => Tabular.C1(t, b)).ToArray();
        var inc = betas.Select(b => Tabular.Theorem31(t, b).LossIncrease).ToArray();
        var large = betas.Select(b => Tabular.C1LargeBeta(t, b)).ToArray();
        var small = betas.Select(b => Tabular.C1SmallBeta(t, b)).ToArray();
        var chart = Chart
            .Combine([
                Chart.Line<double, double, string>(betas, c1, Name: "C1(β) = E log Z − E r/β", LineWidth: 3.0),
                Chart.Point<double, double, string>(betas, inc, Name: "L_SFT(p_RL) − L_SFT(p_SFT), measured"),
                Chart.Line<double, double, string>(
                    betas,
                    large,
                    Name: "Var r / (2β²)  (β → ∞)",
                    LineDash: StyleParam.DrawingStyle.Dash
                ),
                Chart.Line<double, double, string>(
                    betas,
                    small,
                    Name: "(max r − E r)/β  (β → 0)",
                    LineDash: StyleParam.DrawingStyle.Dot
                ),
            ])
            .WithXAxisStyle<double, double, string>(TitleText: "β (KL coefficient)", AxisType: StyleParam.AxisType.Log)
            .WithYAxisStyle<double, double, string>(
                TitleText: "SFT-loss increase (nats per response)",
                AxisType: StyleParam.AxisType.Log
            )
            .WithSize(760, 420);
        return Plotly.NET.Chart.withTitle("Theorem 3.1: RL raises the SFT loss by C1(β)", null).Invoke(chart);
    }

    /// <summary>RL from the SFT optimum on the softmax-linear model: the SFT gap with its smoothness upper bound, and
    /// the RL objective gap with the PL contraction bound (log scale).</summary>
    public static (GenericChart sft, GenericChart rl, GenericChart tradeoff) Landscape(
        SoftmaxLinear m,
        LandscapeResult r
    )
    {
        var t = r.Trajectory.Select(p => (double)p.T).ToArray();
        var sft = Chart
            .Combine([
                Chart.Line<double, double, string>(
                    t,
                    r.Trajectory.Select(p => p.SftGap),
                    Name: "L_S(W_T) − L_S*  (measured)",
                    LineWidth: 3.0
                ),
                Chart.Line<double, double, string>(
                    t,
                    r.Trajectory.Select(p => p.SftUpperBound),
                    Name: "ℓ_S/2 · dist²  (upper bound, rigorous)",
                    LineDash: StyleParam.DrawingStyle.Dash
                ),
                Chart.Line<double, double, string>(
                    t,
                    r.Trajectory.Select(p => p.SftQuadraticGrowth),
                    Name: "μ_S/2 · dist²  (μ_S from this trajectory)",
                    LineDash: StyleParam.DrawingStyle.Dot
                ),
            ])
            .WithXAxisStyle<double, double, string>(TitleText: "RL step T")
            .WithYAxisStyle<double, double, string>(TitleText: "SFT gap")
            .WithSize(760, 380);
        var j0 = r.Trajectory[0].ObjectiveGap;
        var rl = Chart
            .Combine([
                Chart.Line<double, double, string>(
                    t,
                    r.Trajectory.Select(p => Math.Max(p.ObjectiveGap, 1e-16)),
                    Name: "J* − J(W_T)  (measured)",
                    LineWidth: 3.0
                ),
                Chart.Line<double, double, string>(
                    t,
                    t.Select(x => Math.Pow(1 - r.Kappa, x) * j0),
                    Name: "(1−κ)^T (J* − J(W_0))  (PL bound)",
                    LineDash: StyleParam.DrawingStyle.Dash
                ),
            ])
            .WithXAxisStyle<double, double, string>(TitleText: "RL step T")
            .WithYAxisStyle<double, double, string>(TitleText: "RL objective gap", AxisType: StyleParam.AxisType.Log)
            .WithSize(760, 380);
        double sStar = r.Trajectory[0].SftGap;
        var phi = r.Trajectory.Select(p => (j0 - p.ObjectiveGap) - r.Lambda * p.SftGap).ToArray();
        var trade = Chart
            .Combine([
                Chart.Line<double, double, string>(t, phi, Name: $"Φ(T) = ΔJ − {r.Lambda}·ΔL_S", LineWidth: 3.0),
                Chart.Line<double, double, string>(
                    new[] { (double)r.MeasuredTStar, r.MeasuredTStar },
                    new[] { phi.Min(), phi.Max() },
                    Name: $"measured T* = {r.MeasuredTStar}",
                    LineDash: StyleParam.DrawingStyle.Dash
                ),
                Chart.Line<double, double, string>(
                    new[] { r.PredictedTStar, r.PredictedTStar },
                    new[] { phi.Min(), phi.Max() },
                    Name: $"predicted T* = {r.PredictedTStar:F1}",
                    LineDash: StyleParam.DrawingStyle.Dot
                ),
            ])
            .WithXAxisStyle<double, double, string>(TitleText: "RL step T")
            .WithYAxisStyle<double, double, string>(TitleText: "Φ(T)")
            .WithSize(760, 380);
        return (
            Plotly.NET.Chart.withTitle("SFT loss under RL (landscape view)", null).Invoke(sft),
            Plotly.NET.Chart.withTitle("RL converges linearly under PL", null).Invoke(rl),
            Plotly.NET.Chart.withTitle("Optimal RL duration", null).Invoke(trade)
        );
    }

    /// <summary>The transformer measurements: SFT rise with its bounds, the RL gap against the PL bound, and the
    /// one-step threshold (SFT gap at each snapshot against the gap the sufficient condition needs).</summary>
    public static (GenericChart sft, GenericChart rl, GenericChart threshold) TransformerLandscape(
        TransformerLandscapeResult r
    )
    {
        var t = r.Trajectory.Select(p => (double)p.T).ToArray();
        var sft = Chart
            .Combine([
                Chart.Line<double, double, string>(
                    t,
                    r.Trajectory.Select(p => p.SftLoss - r.SftLossStart),
                    Name: "L_S(θ_T) − L_S(θ_0)  (measured)",
                    LineWidth: 3.0
                ),
                Chart.Line<double, double, string>(
                    t,
                    r.Trajectory.Select(p => p.RiseUpperBound),
                    Name: "⟨∇L_S(θ_0), Δ⟩ + ℓ_S/2 ‖Δ‖²  (bound, ℓ_S estimated)",
                    LineDash: StyleParam.DrawingStyle.Dash
                ),
                Chart.Line<double, double, string>(
                    new[] { t[0], t[^1] },
                    new[] { r.PredictedFinalRise, r.PredictedFinalRise },
                    Name: "rise at the tilted optimum (Thm 3.1)",
                    LineDash: StyleParam.DrawingStyle.Dot
                ),
            ])
            .WithXAxisStyle<double, double, string>(TitleText: "RL step T")
            .WithYAxisStyle<double, double, string>(TitleText: "SFT loss rise", AxisType: StyleParam.AxisType.Log)
            .WithSize(760, 380);
        var g0 = r.JStar - r.Trajectory[0].Objective;
        var rl = Chart
            .Combine([
                Chart.Line<double, double, string>(
                    t,
                    r.Trajectory.Select(p => Math.Max(r.JStar - p.Objective, 1e-16)),
                    Name: "J* − J(θ_T)  (measured)",
                    LineWidth: 3.0
                ),
                Chart.Line<double, double, string>(
                    t,
                    t.Select(x => Math.Pow(1 - r.Kappa, x) * g0),
                    Name: "(1−κ)^T (J* − J(θ_0))  (μ_R from this path)",
                    LineDash: StyleParam.DrawingStyle.Dash
                ),
            ])
            .WithXAxisStyle<double, double, string>(TitleText: "RL step T")
            .WithYAxisStyle<double, double, string>(TitleText: "RL objective gap", AxisType: StyleParam.AxisType.Log)
            .WithSize(760, 380);
        var th = r.Threshold;
        var x = th.Select(p => Math.Max(p.SftGap, 1e-12)).ToArray();
        var thr = Chart
            .Combine([
                Chart.Point<double, double, string>(
                    th.Where(p => p.SftDecreased).Select(p => Math.Max(p.SftGap, 1e-12)),
                    th.Where(p => p.SftDecreased).Select(p => Math.Min(p.GapNeeded, 1e6)),
                    Name: "RL step lowered L_S"
                ),
                Chart.Point<double, double, string>(
                    th.Where(p => !p.SftDecreased).Select(p => Math.Max(p.SftGap, 1e-12)),
                    th.Where(p => !p.SftDecreased).Select(p => Math.Min(p.GapNeeded, 1e6)),
                    Name: "RL step raised L_S"
                ),
                Chart.Line<double, double, string>(
                    new[] { x.Min(), x.Max() },
                    new[] { x.Min(), x.Max() },
                    Name: "gap = needed gap",
                    LineDash: StyleParam.DrawingStyle.Dash
                ),
            ])
            .WithXAxisStyle<double, double, string>(
                TitleText: "SFT gap L_S − H(p_data) at the snapshot",
                AxisType: StyleParam.AxisType.Log
            )
            .WithYAxisStyle<double, double, string>(
                TitleText: "gap the sufficient condition needs (10⁶ = cos ≤ 0)",
                AxisType: StyleParam.AxisType.Log
            )
            .WithSize(760, 420);
        return (
            Plotly.NET.Chart.withTitle("Transformer: SFT loss under RL", null).Invoke(sft),
            Plotly.NET.Chart.withTitle("Transformer: RL objective gap", null).Invoke(rl),
            Plotly.NET.Chart.withTitle("Transformer: when can one RL step lower the SFT loss?", null).Invoke(thr)
        );
    }
}
