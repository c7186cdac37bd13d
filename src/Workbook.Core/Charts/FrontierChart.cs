// The decoupling frontier from summary.json's "frontier" (Experiments/Frontier.cs): x = final held-out SFT loss,
// y = final strict reward.
//  1. Each pipeline is one marker at its seed mean with 95% CI error bars on both axes (Student-t on the loss, the
//     bounded interval inside [0, 1] on the reward); the legend names say "mean, 95% CI".
//  2. Every seed is a small point of the same colour, its hover naming the real seed and both values.
//  3. The Pareto front (on the means) is a step line through its members in order of loss: the region below and to
//     the right of it is dominated.
//  4. Controls are grey open diamonds and never on the front (they test the theorem; they are not methods).
using System.Globalization;
using System.Text.Json.Nodes;
using Plotly.NET;
using Plotly.NET.CSharp;
using Plotly.NET.TraceObjects;
using Chart = Plotly.NET.CSharp.Chart;

namespace Workbook.Charts;

public static class FrontierChart
{
    const string Grey = "#9a9a9a";

    static double N(JsonNode? n) => n is null ? double.NaN : n.GetValue<double>();

    static string F(double x) => x.ToString("0.000", CultureInfo.InvariantCulture);

    /// <summary>The legend name of a pipeline's mean marker.</summary>
    public static string MeanName(string pipeline, string role, bool onFront) =>
        role == "control"
            ? $"{pipeline} (control, not a candidate): mean, 95% CI"
            : $"{pipeline}{(onFront ? " (on the front)" : "")}: mean, 95% CI";

    public const string FrontName = "Pareto front (on the means)";

    /// <summary>Asymmetric error bars from a {mean, ci95} node: plus and minus arrays of one value.</summary>
    static Error Bars(double mean, JsonNode? ci, string color)
    {
        double lo = N(ci?[0]),
            hi = N(ci?[1]);
        var e = new Error();
        e.SetProperty("type", "data");
        e.SetProperty("symmetric", false);
        e.SetProperty("visible", double.IsFinite(lo) && double.IsFinite(hi));
        e.SetProperty("array", new[] { double.IsFinite(hi) ? hi - mean : 0.0 });
        e.SetProperty("arrayminus", new[] { double.IsFinite(lo) ? mean - lo : 0.0 });
        e.SetProperty("color", color);
        e.SetProperty("thickness", 1.2);
        e.SetProperty("width", 3);
        return e;
    }

    /// <summary>A marker: filled circles for pipelines and methods, open diamonds for controls.</summary>
    static Marker Marker(string hex, bool control, int size)
    {
        var m = new Marker();
        m.SetProperty("color", hex);
        m.SetProperty("size", size);
        m.SetProperty("symbol", control ? "diamond-open" : "circle");
        return m;
    }

    /// <summary>The frontier chart of a summary that has "frontier".</summary>
    public static GenericChart Build(JsonObject summary)
    {
        var fr =
            summary["frontier"]?.AsObject()
            ?? throw new ArgumentException("FrontierChart: the summary has no \"frontier\" (written by Summary.Build)");
        var pipes = fr["pipelines"]!.AsObject();
        var traces = new List<GenericChart>();
        int colour = 0,
            nSeeds = 0;
        foreach (var (name, p) in pipes)
        {
            string role = p!["role"]!.GetValue<string>();
            bool control = role == "control",
                onFront = p["on_front"]!.GetValue<bool>();
            var hex = control ? Grey : Palette.At(colour++);
            var seeds = p["seeds"]!.AsArray().Select(s => s!.GetValue<long>()).ToArray();
            var ls = p["final_sft_loss"]!["per_seed"]!.AsArray().Select(N).ToArray();
            var rs = p["final_reward"]!["per_seed"]!.AsArray().Select(N).ToArray();
            nSeeds = Math.Max(nSeeds, seeds.Length);
            var ok = Enumerable.Range(0, seeds.Length).Where(k => double.IsFinite(ls[k]) && double.IsFinite(rs[k]));
            traces.Add(
                Chart.Point<double, double, string>(
                    ok.Select(k => ls[k]),
                    ok.Select(k => rs[k]),
                    Name: $"{name}: seeds",
                    ShowLegend: false,
                    Opacity: 0.55,
                    MultiText: ok.Select(k => $"{name}, seed {seeds[k]}: SFT loss {F(ls[k])}, reward {F(rs[k])}")
                        .ToArray(),
                    Marker: Marker(hex, control, 6)
                )
            );
            double lm = N(p["final_sft_loss"]!["mean"]),
                rm = N(p["final_reward"]!["mean"]);
            if (!double.IsFinite(lm) || !double.IsFinite(rm))
                continue;
            var mean = Chart.Point<double, double, string>(
                new[] { lm },
                new[] { rm },
                Name: MeanName(name, role, onFront),
                MultiText: new[] { $"{name}: mean SFT loss {F(lm)}, mean reward {F(rm)} over {seeds.Length} seeds" },
                Marker: Marker(hex, control, control ? 11 : 13)
            );
            mean = Plotly.NET.Chart.withXError(Bars(lm, p["final_sft_loss"]!["ci95"], hex)).Invoke(mean);
            mean = Plotly.NET.Chart.withYError(Bars(rm, p["final_reward"]!["ci95"], hex)).Invoke(mean);
            traces.Add(mean);
        }
        var front = fr["front"]!
            .AsArray()
            .Select(n => pipes[n!.GetValue<string>()]!)
            .Select(p => (x: N(p["final_sft_loss"]!["mean"]), y: N(p["final_reward"]!["mean"])))
            .OrderBy(q => q.x)
            .ToList();
        if (front.Count > 0)
        {
            var (xs, ys) = Steps(front);
            traces.Add(
                Chart.Line<double, double, string>(
                    xs,
                    ys,
                    Name: FrontName,
                    LineColor: Color.fromString("#333333"),
                    LineDash: StyleParam.DrawingStyle.Dash,
                    LineWidth: 1.5
                )
            );
        }
        var chart = Chart
            .Combine(traces)
            .WithXAxisStyle<double, double, string>(TitleText: "final held-out SFT loss (nats/token; lower is better)")
            .WithYAxisStyle<double, double, string>(TitleText: "final strict reward (higher is better)")
            .WithSize(820, 520);
        return Plotly
            .NET.Chart.withTitle(
                $"The decoupling frontier: mean over {nSeeds} seeds with 95% CI error bars; small points are seeds",
                null
            )
            .Invoke(chart);
    }

    /// <summary>The staircase through front points sorted by loss (rewards then rise too): from each point
    /// horizontally to the next one's loss, then up to its reward. Below and right of it is dominated.</summary>
    public static (double[] xs, double[] ys) Steps(IReadOnlyList<(double x, double y)> front)
    {
        var xs = new List<double> { front[0].x };
        var ys = new List<double> { front[0].y };
        for (int i = 1; i < front.Count; i++)
        {
            xs.Add(front[i].x);
            ys.Add(front[i - 1].y);
            xs.Add(front[i].x);
            ys.Add(front[i].y);
        }
        return (xs.ToArray(), ys.ToArray());
    }
}
