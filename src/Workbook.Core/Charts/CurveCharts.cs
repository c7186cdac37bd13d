// Plotly.NET charts of the experiment curves: per pipeline, the held-out SFT loss and the rewards over optimizer steps,
// one thin line per seed, the seed mean, a min-max band over seeds, and dashed lines at the stage boundaries.
// HTML output embeds plotly.js (from Plotly.NET's own resources), so reports render offline.
using System.Text.Json.Nodes;
using Plotly.NET;
using Plotly.NET.CSharp;
using Chart = Plotly.NET.CSharp.Chart;

namespace Workbook.Charts;

public static class CurveCharts
{
    static readonly string[] Palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];

    /// <summary>A curve over steps for several seeds: mean, min-max band and the individual seeds.</summary>
    public static GenericChart Curves(string title, string yTitle, IReadOnlyList<(string label, IReadOnlyList<(double step, double value)[]> seeds)> series,
        IReadOnlyList<double>? boundaries = null, bool logY = false)
    {
        var traces = new List<GenericChart>();
        double lo = double.MaxValue, hi = double.MinValue;
        for (int s = 0; s < series.Count; s++)
        {
            var (label, seeds) = series[s];
            var hex = Palette[s % Palette.Length];
            var color = Color.fromString(hex);
            var band = Color.fromString($"rgba({Convert.ToInt32(hex[1..3], 16)},{Convert.ToInt32(hex[3..5], 16)},{Convert.ToInt32(hex[5..7], 16)},0.18)");
            var steps = seeds.SelectMany(x => x.Select(p => p.step)).Distinct().Order().ToArray();
            var bySeed = seeds.Select(x => x.GroupBy(p => p.step).ToDictionary(g => g.Key, g => g.Last().value)).ToList();
            double[] Agg(Func<IEnumerable<double>, double> f) => steps.Select(st => f(bySeed.Where(d => d.ContainsKey(st)).Select(d => d[st]))).ToArray();
            var mean = Agg(v => v.Average()); var min = Agg(v => v.Min()); var max = Agg(v => v.Max());
            lo = Math.Min(lo, min.DefaultIfEmpty(0).Min()); hi = Math.Max(hi, max.DefaultIfEmpty(0).Max());
            traces.Add(Chart.Line<double, double, string>(steps, min, Name: $"{label} min", ShowLegend: false, LineColor: band, LineWidth: 0.0));
            traces.Add(Chart.Line<double, double, string>(steps, max, Name: $"{label} seed range", ShowLegend: false, LineColor: band, LineWidth: 0.0,
                Fill: StyleParam.Fill.ToNext_y, FillColor: band));
            for (int k = 0; k < seeds.Count; k++)
                traces.Add(Chart.Line<double, double, string>(seeds[k].Select(p => p.step), seeds[k].Select(p => p.value), Name: $"{label} seed {k + 1}",
                    ShowLegend: false, LineColor: color, LineWidth: 0.8, Opacity: 0.45));
            traces.Add(Chart.Line<double, double, string>(steps, mean, Name: label, LineColor: color, LineWidth: 2.5, ShowMarkers: true));
        }
        if (boundaries is not null && lo <= hi)
            foreach (var b in boundaries)
                traces.Add(Chart.Line<double, double, string>(new[] { b, b }, new[] { lo, hi }, Name: "stage boundary", ShowLegend: false,
                    LineColor: Color.fromString("#888888"), LineDash: StyleParam.DrawingStyle.Dash, LineWidth: 1.0));
        var chart = Chart.Combine(traces)
            .WithXAxisStyle<double, double, string>(TitleText: "optimizer step")
            .WithYAxisStyle<double, double, string>(TitleText: yTitle, AxisType: logY ? StyleParam.AxisType.Log : StyleParam.AxisType.Linear)
            .WithSize(760, 380);
        return Plotly.NET.Chart.withTitle(title, null).Invoke(chart);
    }

    /// <summary>The loss and reward charts of one pipeline from summary.json.</summary>
    public static (GenericChart loss, GenericChart reward) Pipeline(JsonObject summary, string pipeline)
    {
        var p = summary["pipelines"]![pipeline]!.AsObject();
        var keys = summary["metric_keys"]!.AsObject();
        string lossKey = keys["sft_loss"]!.GetValue<string>(), strict = keys["reward"]!.GetValue<string>(), lenient = keys["lenient_reward"]!.GetValue<string>();
        IReadOnlyList<(double, double)[]> Seeds(string key) => p["curves"]!.AsArray().Select(c => c!["points"]!.AsArray()
            .Where(pt => pt!["metrics"]![key] is not null).Select(pt => (Num(pt!["step"]!), Num(pt!["metrics"]![key]!))).ToArray()).ToList();
        var bounds = p["stages"]!.AsArray().Skip(1).Select(s => Num(s!["Start"]!)).ToList();
        var loss = Curves($"{pipeline}: SFT loss on held-out expert data", "cross-entropy (nats/token, log scale)", [("eval SFT loss", Seeds(lossKey))], bounds, logY: true);
        var reward = Curves($"{pipeline}: reward on held-out prompts", "mean reward", [("strict format", Seeds(strict)), ("lenient (last label)", Seeds(lenient))], bounds);
        return (loss, reward);
    }

    /// <summary>A JSON number as double, whether the node was parsed from text or built in memory from a long.</summary>
    static double Num(JsonNode n) => n.AsValue().TryGetValue<double>(out var d) ? d : n.AsValue().TryGetValue<long>(out var l) ? l
        : double.Parse(n.ToJsonString(), System.Globalization.CultureInfo.InvariantCulture);

    public static string PlotlyJs()
    {
        using var s = typeof(GenericChart).Assembly.GetManifestResourceStream("Plotly.NET.plotly-2.28.0.min.js")
            ?? throw new InvalidOperationException("plotly.js resource not found in Plotly.NET");
        using var r = new StreamReader(s);
        return r.ReadToEnd();
    }

    /// <summary>A script tag defining window.Plotly offline (AMD 'define' hidden so it also works beside require.js).</summary>
    public static string PlotlyScriptTag() =>
        "<script type=\"text/javascript\">(function(){var d=window.define;window.define=undefined;\n" + PlotlyJs() + "\nwindow.define=d;})();</script>";

    public static string Html(GenericChart chart) => GenericChart.toChartHTML(chart);
}
