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
        Enumerable.Range(0, n).Select(i => Math.Exp(Math.Log(lo) + (Math.Log(hi) - Math.Log(lo)) * i / (n - 1))).ToArray();

    public static GenericChart C1VersusBeta(TabularProblem t, double[] betas)
    {
        var c1 = betas.Select(b => Tabular.C1(t, b)).ToArray();
        var inc = betas.Select(b => Tabular.Theorem31(t, b).LossIncrease).ToArray();
        var large = betas.Select(b => Tabular.C1LargeBeta(t, b)).ToArray();
        var small = betas.Select(b => Tabular.C1SmallBeta(t, b)).ToArray();
        var chart = Chart.Combine([
            Chart.Line<double, double, string>(betas, c1, Name: "C1(β) = E log Z − E r/β", LineWidth: 3.0),
            Chart.Point<double, double, string>(betas, inc, Name: "L_SFT(p_RL) − L_SFT(p_SFT), measured"),
            Chart.Line<double, double, string>(betas, large, Name: "Var r / (2β²)  (β → ∞)", LineDash: StyleParam.DrawingStyle.Dash),
            Chart.Line<double, double, string>(betas, small, Name: "(max r − E r)/β  (β → 0)", LineDash: StyleParam.DrawingStyle.Dot),
        ])
        .WithXAxisStyle<double, double, string>(TitleText: "β (KL coefficient)", AxisType: StyleParam.AxisType.Log)
        .WithYAxisStyle<double, double, string>(TitleText: "SFT-loss increase (nats per response)", AxisType: StyleParam.AxisType.Log)
        .WithSize(760, 420);
        return Plotly.NET.Chart.withTitle("Theorem 3.1: RL raises the SFT loss by C1(β)", null).Invoke(chart);
    }
}
