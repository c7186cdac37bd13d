// The sweep's charts: measured SFT-loss rise against the predicted one (each point with its 95% CIs on both axes, the
// line y = x), and the RL-then-SFT twin's strict reward against the expert data's own reward.
using System.Text.Json.Nodes;
using Plotly.NET;
using Plotly.NET.CSharp;
using Chart = Plotly.NET.CSharp.Chart;

namespace Workbook.Charts;

public static class SweepCharts
{
    static double? N(JsonNode? n) => n is null ? null : n.GetValue<double>();

    static GenericChart Scatter(
        JsonArray points,
        Func<JsonNode, (JsonNode? x, JsonNode? y)> pick,
        string title,
        string xTitle,
        string yTitle
    )
    {
        var traces = new List<GenericChart>();
        double lo = double.MaxValue,
            hi = double.MinValue;
        foreach (var grp in points.GroupBy(p => p!["loose_format_fraction"]!.GetValue<double>()))
        {
            var xs = new List<double>();
            var ys = new List<double>();
            var labels = new List<string>();
            var xLo = new List<double>();
            var xHi = new List<double>();
            var yLo = new List<double>();
            var yHi = new List<double>();
            foreach (var p in grp)
            {
                var (x, y) = pick(p!);
                if (x is null || y is null || N(x["mean"]) is not { } xm || N(y["mean"]) is not { } ym)
                    continue;
                xs.Add(xm);
                ys.Add(ym);
                xLo.Add(xm - (N(x["ci95"]![0]) ?? xm));
                xHi.Add((N(x["ci95"]![1]) ?? xm) - xm);
                yLo.Add(ym - (N(y["ci95"]![0]) ?? ym));
                yHi.Add((N(y["ci95"]![1]) ?? ym) - ym);
                labels.Add($"β {p!["beta"]}");
                lo = Math.Min(lo, Math.Min(xm - xLo[^1], ym - yLo[^1]));
                hi = Math.Max(hi, Math.Max(xm + xHi[^1], ym + yHi[^1]));
            }
            if (xs.Count == 0)
                continue;
            var trace = Chart.Scatter<double, double, string>(
                xs,
                ys,
                StyleParam.Mode.Markers_Text,
                Name: $"loose fraction {grp.Key}",
                MultiText: labels,
                TextPosition: StyleParam.TextPosition.TopRight
            );
            // error bars as segments: the 95% CI on each axis
            for (int i = 0; i < xs.Count; i++)
            {
                traces.Add(
                    Chart.Line<double, double, string>(
                        new[] { xs[i] - xLo[i], xs[i] + xHi[i] },
                        new[] { ys[i], ys[i] },
                        ShowLegend: false,
                        LineColor: Color.fromString("#999999"),
                        LineWidth: 1.0,
                        Name: $"{labels[i]}: predicted 95% CI"
                    )
                );
                traces.Add(
                    Chart.Line<double, double, string>(
                        new[] { xs[i], xs[i] },
                        new[] { ys[i] - yLo[i], ys[i] + yHi[i] },
                        ShowLegend: false,
                        LineColor: Color.fromString("#999999"),
                        LineWidth: 1.0,
                        Name: $"{labels[i]}: measured 95% CI"
                    )
                );
            }
            traces.Add(trace);
        }
        if (lo <= hi)
            traces.Add(
                Chart.Line<double, double, string>(
                    new[] { lo, hi },
                    new[] { lo, hi },
                    Name: "y = x",
                    LineColor: Color.fromString("#888888"),
                    LineDash: StyleParam.DrawingStyle.Dash
                )
            );
        var chart = Chart
            .Combine(traces)
            .WithXAxisStyle<double, double, string>(TitleText: xTitle)
            .WithYAxisStyle<double, double, string>(TitleText: yTitle)
            .WithSize(700, 480);
        return Plotly.NET.Chart.withTitle(title, null).Invoke(chart);
    }

    /// <summary>Measured against predicted ΔL_SFT per response; error bars are the 95% CIs.</summary>
    public static GenericChart Rise(JsonObject sweep) =>
        Scatter(
            sweep["points"]!.AsArray(),
            p => (p["predicted"], p["measured"]),
            "SFT then RL: SFT-loss rise, measured vs predicted (error bars: 95% CIs)",
            "predicted ΔL_SFT (nats per response)",
            "measured ΔL_SFT (nats per response)"
        );

    /// <summary>The rise net of the coin-reward null (measured − null, paired by seed) against the prediction: what the
    /// reward's tilt made, once RL's own drift in the same budget is taken out.</summary>
    public static GenericChart RiseNetOfNull(JsonObject sweep) =>
        Scatter(
            sweep["points"]!.AsArray(),
            p => (p["predicted"], p["measured_minus_null"]),
            "SFT then RL net of the coin-reward null: measured − null vs predicted (error bars: 95% CIs, paired)",
            "predicted ΔL_SFT (nats per response)",
            "measured − coin null ΔL_SFT (nats per response)"
        );

    /// <summary>The twin: strict reward after SFT following RL, against E_{p_data} r × label accuracy.</summary>
    public static GenericChart Twin(JsonObject sweep) =>
        Scatter(
            sweep["points"]!.AsArray(),
            p => (p["twin"]?["predicted"], p["twin"]?["measured"]),
            "RL then SFT: strict reward after SFT, measured vs the expert data's own (error bars: 95% CIs)",
            "predicted: E_{p_data} r × label accuracy",
            "measured strict reward"
        );
}
