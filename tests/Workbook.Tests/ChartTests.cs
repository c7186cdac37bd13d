using System.Text.Json.Nodes;
using Workbook.Charts;
using Workbook.Experiments;

namespace Workbook.Tests;

public class ChartTests
{
    /// <summary>A summary in the shape Summary.Build writes: seeds with non-consecutive numbers, interleaved
    /// stages.</summary>
    public static JsonObject SyntheticSummary(
        long[] seeds,
        string[] stageNames,
        Func<int, int, (double loss, double strict, double lenient)> at
    )
    {
        var stages = new JsonArray(
            stageNames
                .Select(
                    (n, i) =>
                        (JsonNode?)
                            new JsonObject
                            {
                                ["Name"] = n,
                                ["Kind"] = n.EndsWith("rl") ? "grpo" : "sft",
                                ["Start"] = 10 * i,
                                ["Steps"] = 10,
                            }
                )
                .ToArray()
        );
        var curves = new JsonArray(
            seeds
                .Select(
                    (seed, k) =>
                        (JsonNode?)
                            new JsonObject
                            {
                                ["seed"] = seed,
                                ["points"] = new JsonArray(
                                    Enumerable
                                        .Range(0, 5 * stageNames.Length + 1)
                                        .Select(i =>
                                        {
                                            var (loss, strict, lenient) = at(k, i);
                                            return (JsonNode?)
                                                new JsonObject
                                                {
                                                    ["step"] = 2 * i,
                                                    ["stage"] = Math.Min(i / 5, stageNames.Length - 1),
                                                    ["kind"] = "sft",
                                                    ["metrics"] = new JsonObject
                                                    {
                                                        ["eval_sft_loss"] = loss,
                                                        ["eval_rewards/strict/mean"] = strict,
                                                        ["eval_rewards/lenient/mean"] = lenient,
                                                    },
                                                };
                                        })
                                        .ToArray()
                                ),
                            }
                )
                .ToArray()
        );
        return new JsonObject
        {
            ["pipelines"] = new JsonObject
            {
                ["interleaved"] = new JsonObject { ["stages"] = stages, ["curves"] = curves },
            },
            ["seeds"] = new JsonArray(seeds.Select(s => (JsonNode?)s).ToArray()),
            ["metric_keys"] = new JsonObject
            {
                ["sft_loss"] = "eval_sft_loss",
                ["reward"] = "eval_rewards/strict/mean",
                ["lenient_reward"] = "eval_rewards/lenient/mean",
            },
        };
    }

    static readonly long[] Seeds = [1000, 1003, 1007];
    static readonly string[] Stages = ["round1-sft", "round1-rl", "round2-sft", "round2-rl"];

    static JsonObject Summary() =>
        SyntheticSummary(
            Seeds,
            Stages,
            (k, i) => (1.0 / (1 + i) + 0.01 * k, Math.Min(1.0, 0.1 * i + 0.05 * k), k == 0 ? 1.0 : 0.9 + 0.02 * k)
        );

    [Fact]
    public void The_band_is_the_95_percent_CI_of_the_mean_inside_the_range()
    {
        double[] v = [0.2, 0.5, 0.8];
        var (lo, hi) = CurveCharts.Band(v);
        Assert.Equal(Stat.Of(v).Ci95, new[] { lo, hi });
        Assert.True(lo < 0.2 && hi > 0.8); // not the min-max range of the seeds
        var (blo, bhi) = CurveCharts.Band([1.0, 1.0, 0.9], (0, 1));
        Assert.Equal(Stat.Bounded([1.0, 1.0, 0.9], 0, 1).Ci95, new[] { blo, bhi });
        Assert.True(bhi <= 1);
        var (llo, _) = CurveCharts.Band([0.01, 0.02, 0.9], (0, double.PositiveInfinity));
        Assert.Equal(0, llo); // the t interval would go below 0; a loss cannot
        Assert.True(double.IsNaN(CurveCharts.Band([0.5]).lo));
    }

    [Fact]
    public void Pipeline_charts_name_the_band_the_real_seeds_and_the_stages()
    {
        var (loss, reward) = CurveCharts.Pipeline(Summary(), "interleaved");
        string l = CurveCharts.Html(loss),
            r = CurveCharts.Html(reward);
        Assert.Contains(CurveCharts.BandName("eval SFT loss", 3), l);
        Assert.Contains("95% CI of the mean over 3 seeds", r);
        Assert.Contains(CurveCharts.BandName("strict format", 3), r);
        Assert.DoesNotContain("seed range", r);
        foreach (var html in new[] { l, r })
        {
            foreach (var s in Seeds)
                Assert.Contains($"seed {s}\"", html);
            Assert.DoesNotContain("seed #1", html);
            foreach (var st in Stages)
                Assert.Contains($"\"{st}\"", html);
            // three boundaries: at the start of each stage but the first
            Assert.Equal(3, System.Text.RegularExpressions.Regex.Matches(html, "\"type\":\"line\"").Count);
        }
    }

    [Fact]
    public void Chart_json_is_newtonsofts_own_with_loops_found_by_reference()
    {
        var (loss, _) = CurveCharts.Pipeline(Summary(), "interleaved");
        var html = CurveCharts.Html(loss);
        Assert.True(CurveCharts.LoopCheckByReference); // a Plotly.NET that moved its settings fails here
        // and the settings Plotly.NET serializes with now hold the reference comparer
        var settings = (Newtonsoft.Json.JsonSerializerSettings)
            typeof(Plotly.NET.GenericChart)
                .Assembly.GetType("Globals")!
                .GetProperty(
                    "JSON_CONFIG",
                    System.Reflection.BindingFlags.Static
                        | System.Reflection.BindingFlags.NonPublic
                        | System.Reflection.BindingFlags.Public
                )!
                .GetValue(null)!;
        Assert.Same(ReferenceEqualityComparer.Instance, settings.EqualityComparer);
        Assert.Equal(Newtonsoft.Json.ReferenceLoopHandling.Serialize, settings.ReferenceLoopHandling);
        // the traces and the layout as Newtonsoft writes them with its default (Equals) loop check, as before
        var before = new Newtonsoft.Json.JsonSerializerSettings
        {
            ReferenceLoopHandling = Newtonsoft.Json.ReferenceLoopHandling.Serialize,
        };
        foreach (
            var (name, part) in new (string, object)[]
            {
                ("data", Plotly.NET.GenericChart.getTraces(loss)),
                ("layout", Plotly.NET.GenericChart.getLayout(loss)),
            }
        )
        {
            var expected = Newtonsoft.Json.JsonConvert.SerializeObject(part, before);
            Assert.True(expected.Length > 200, $"{name}: {expected.Length} characters");
            int at = html.IndexOf($"var {name} = ", StringComparison.Ordinal) + $"var {name} = ".Length;
            Assert.Equal(expected, html.Substring(at, Math.Min(expected.Length, html.Length - at)));
            Assert.Equal(';', html[at + expected.Length]);
        }
    }

    [Fact]
    public void The_charts_render_with_their_stage_labels()
    {
        var (loss, reward) = CurveCharts.Pipeline(Summary(), "interleaved");
        var path = Path.Combine(TestData.TempDir(), "charts.html");
        File.WriteAllText(
            path,
            "<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
                + CurveCharts.PlotlyScriptTag()
                + "</head><body>"
                + CurveCharts.Html(loss)
                + CurveCharts.Html(reward)
                + "</body></html>"
        );
        ChromiumRender.AssertChartsRender(path, minCharts: 2);
        var dom = Dom(path);
        // a label per chart
        foreach (var st in Stages)
            Assert.Equal(2, System.Text.RegularExpressions.Regex.Matches(dom, $">{st}<").Count);
    }

    static string Dom(string htmlPath)
    {
        var psi = new System.Diagnostics.ProcessStartInfo(
            ChromiumRender.Browser,
            [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                $"--user-data-dir={TestData.TempDir()}",
                "--virtual-time-budget=10000",
                "--dump-dom",
                "file://" + Path.GetFullPath(htmlPath),
            ]
        )
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using var p = System.Diagnostics.Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var dom = p.StandardOutput.ReadToEnd();
        Assert.True(p.WaitForExit(120_000), "chromium did not finish");
        _ = err.Result;
        return dom;
    }

    [Fact]
    public void Seed_ids_must_match_the_seed_curves()
    {
        (double, double)[] one = [(0, 1.0), (1, 2.0)];
        var e = Assert.Throws<ArgumentException>(() =>
            CurveCharts.Curves("t", "y", [("x", [one, one])], seedIds: [1000])
        );
        Assert.Contains("1 seed ids for 2 seed curves", e.Message);
    }
}
