// Forgetting while it happens (issue 14, §4), from summary.json's "forgetting" points:
//  1. one scatter per quantity (KL from the stage's start, entropy, and the other task's loss when forgetting_task is
//     on) against the rise of the held-out SFT loss since the RL stage's start, one point per evaluation;
//  2. one colour per pipeline; the hover names the real seed, the stage and the optimizer step of each point.
using System.Text.Json.Nodes;
using Plotly.NET;
using Plotly.NET.CSharp;
using Chart = Plotly.NET.CSharp.Chart;

namespace Workbook.Charts;

public static class ForgettingChart
{
    /// <summary>The charts of the summary's forgetting points (empty when there are none): KL, entropy and, when any
    /// point has it, the other task's loss, each against the SFT-loss rise.</summary>
    public static List<GenericChart> Charts(JsonObject summary)
    {
        var charts = new List<GenericChart>();
        if (summary["forgetting"]?["points"] is not JsonObject points)
            return charts;
        foreach (
            var (key, title, yTitle) in new[]
            {
                ("kl_from_start", "KL from the RL stage's start", "KL(p_start ‖ p_current) (nats/response)"),
                ("entropy", "Policy entropy on its own samples", "entropy (nats/token)"),
                ("other_task_sft_loss", "The other task's held-out loss", "other task's SFT loss (nats/token)"),
            }
        )
        {
            var traces = new List<GenericChart>();
            int c = 0;
            foreach (var (pipeline, node) in points)
            {
                var pts = node!
                    .AsArray()
                    .Where(p => p!["sft_loss_rise"] is not null && p[key] is not null)
                    .Select(p => p!)
                    .ToList();
                var color = Color.fromString(Palette.At(c++));
                if (pts.Count == 0)
                    continue;
                traces.Add(
                    Chart.Scatter<double, double, string>(
                        pts.Select(p => p["sft_loss_rise"]!.GetValue<double>()),
                        pts.Select(p => p[key]!.GetValue<double>()),
                        StyleParam.Mode.Markers,
                        Name: pipeline,
                        MultiText: pts.Select(p =>
                                $"{pipeline}, seed {p["seed"]}, stage {p["stage"]}, step {p["step"]}"
                            )
                            .ToList(),
                        MarkerColor: color
                    )
                );
            }
            if (traces.Count == 0)
                continue;
            var chart = Chart
                .Combine(traces)
                .WithXAxisStyle<double, double, string>(
                    TitleText: "rise of the held-out SFT loss since the stage's start (nats/response)"
                )
                .WithYAxisStyle<double, double, string>(TitleText: yTitle)
                .WithSize(760, 420);
            charts.Add(Plotly.NET.Chart.withTitle(title, null).Invoke(chart));
        }
        return charts;
    }
}
