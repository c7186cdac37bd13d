// One-call entry points for notebooks (and scripts): each is also one CLI command away (`workbook run ...`).
// Quick mode (WORKBOOK_QUICK=1, set by `workbook notebooks run --quick`) uses the CI budgets.
using System.Text.Json.Nodes;
using Plotly.NET;
using Workbook.Charts;
using Workbook.Data;
using Workbook.Model;
using Workbook.Text;
using Workbook.Training;
using static TorchSharp.torch;

namespace Workbook.Experiments;

public static class Workbench
{
    public static bool Quick => Environment.GetEnvironmentVariable("WORKBOOK_QUICK") == "1";

    /// <summary>WORKBOOK_RUNS, else ../runs (notebooks run in notebooks/).</summary>
    public static string RunsRoot => Environment.GetEnvironmentVariable("WORKBOOK_RUNS") is { Length: > 0 } r ? r : Path.GetFullPath(Path.Combine("..", "runs"));

    /// <summary>Runs pipelines with the default config (or the quick one) and returns summary.json; report.html is written too.
    /// The same as `./workbook run &lt;pipeline&gt; [--quick] [--set ...]`.</summary>
    public static JsonObject Run(string[] pipelines, params string[] overrides)
    {
        var cfg = ExperimentConfig.Load(null, overrides);
        if (Quick) cfg = cfg.Quick();
        var name = (Quick ? "quick-" : "") + (pipelines.Length == ExperimentConfig.Pipelines.Length ? "all" : string.Join("+", pipelines));
        var runDir = ExperimentRunner.NewRunDir(RunsRoot, name);
        var (summary, _) = new ExperimentRunner(cfg, runDir, RunsRoot, Console.WriteLine).RunAndReport(pipelines);
        Console.WriteLine($"run folder: {runDir}");
        return summary;
    }

    public static GenericChart LossChart(JsonObject summary, string pipeline) => CurveCharts.Pipeline(summary, pipeline).loss;
    public static GenericChart RewardChart(JsonObject summary, string pipeline) => CurveCharts.Pipeline(summary, pipeline).reward;

    /// <summary>The plain-words statements of a summary, one per line.</summary>
    public static string Statements(JsonObject summary) =>
        string.Join("\n", summary["statements"]!.AsObject().Select(kv => $"{kv.Key}: {kv.Value}"));

    /// <summary>Mean and 95% CI of one summary field, e.g. ("sft-then-rl", "sft_loss_change_during_rl").</summary>
    public static string Field(JsonObject summary, string pipeline, string field)
    {
        var s = summary["pipelines"]![pipeline]![field]!;
        var ci = s["ci95"]!.AsArray();
        return $"{field}: {s["mean"]} (95% CI [{ci[0]}, {ci[1]}]; per seed {s["per_seed"]!.ToJsonString()})";
    }

    /// <summary>The landscape constants measured on the small transformer (Theory/TransformerLandscape.cs): the base model of
    /// the default config (cached; trained if missing), in float64, SFT then RL on a candidate set with exact objectives.
    /// Writes landscape.json (with config and versions) into a new run folder. The same as `./workbook landscape [--quick]`.</summary>
    public static Theory.TransformerLandscapeResult TransformerLandscape(Theory.TransformerLandscapeOptions? options = null, string? runsRoot = null, Action<string>? log = null)
    {
        runsRoot ??= RunsRoot; log ??= Console.WriteLine;
        var cfg = ExperimentConfig.Load(null, []);
        if (Quick) cfg = cfg.Quick();
        var o = options ?? (Quick ? new Theory.TransformerLandscapeOptions().Quick() : new Theory.TransformerLandscapeOptions());
        var runDir = ExperimentRunner.NewRunDir(runsRoot, (Quick ? "quick-" : "") + "landscape");
        var runner = new ExperimentRunner(cfg, runDir, runsRoot, log);
        long seed = cfg.SeedBase;
        using var model = Checkpoint.Load(runner.BaseModel(seed), ScalarType.Float64, CPU);
        var result = Theory.TransformerLandscape.Run(model, runner.Codec, runner.Task.Eval, runner.Task.Reward, o, log);
        Directory.CreateDirectory(runDir);
        var jo = new System.Text.Json.JsonSerializerOptions(TrainOptions.Json) { NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals };
        var json = new JsonObject
        {
            ["options"] = System.Text.Json.JsonSerializer.SerializeToNode(o, jo),
            ["experiment_config"] = System.Text.Json.JsonSerializer.SerializeToNode(cfg, jo),
            ["base_seed"] = seed, ["versions"] = System.Text.Json.JsonSerializer.SerializeToNode(ExperimentRunner.Versions()),
            ["result"] = System.Text.Json.JsonSerializer.SerializeToNode(result, jo),
        };
        AtomicFile.WriteAllText(Path.Combine(runDir, "landscape.json"), json.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
        var (sft, rl, thr) = TheoryCharts.TransformerLandscape(result);
        var html = new System.Text.StringBuilder("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>landscape</title>")
            .Append("<style>body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}</style>")
            .Append(CurveCharts.PlotlyScriptTag()).Append("</head><body><h1>The landscape view on the small transformer</h1>")
            .Append("<p><b>Provenance.</b> The statements checked here are our reconstruction of the paper's v2 PL results (notes/paper.md §3), not quotations.</p><ul>");
        foreach (var line in Theory.TransformerLandscape.Describe(result)) html.Append("<li>").Append(System.Net.WebUtility.HtmlEncode(line)).Append("</li>");
        html.Append("</ul>").Append(CurveCharts.Html(sft)).Append(CurveCharts.Html(rl)).Append(CurveCharts.Html(thr)).Append("</body></html>");
        AtomicFile.WriteAllText(Path.Combine(runDir, "landscape.html"), html.ToString());
        log($"landscape: {Path.Combine(runDir, "landscape.json")} and landscape.html");
        return result;
    }

    /// <summary>
    /// The paper's model at CPU scale: builds Qwen3-0.6B (596,049,920 parameters; random init in bf16) or loads a real
    /// folder, and runs one AdamW step of SFT on one CoLA-format example with the real Qwen3 tokenizer and the full
    /// vocabulary. Returns what happened (parameters, loss before/after, seconds, RSS), so a reader sees the real model run.
    /// </summary>
    public static Dictionary<string, object> PaperScaleStep(string? modelDir = null, double learningRate = 1e-5)
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var tok = modelDir is not null && File.Exists(Path.Combine(modelDir, "tokenizer.json")) ? Qwen3Tokenizer.Load(modelDir) : Qwen3Tokenizer.Load(TokenizerFiles.EnsureDefault());
        using var model = modelDir is not null ? Checkpoint.Load(modelDir, ScalarType.BFloat16) : new Qwen3ForCausalLM(Qwen3Config.Qwen3_0_6B, ScalarType.BFloat16, CPU, seed: 1);
        double build = sw.Elapsed.TotalSeconds;
        var codec = new Codec(tok, TaskVocabulary.Identity(model.Config.VocabSize));
        var example = GrammarTask.Create(0, new TaskOptions { TrainSize = 1, EvalSize = 1 }).Train[0];
        var batch = Losses.MakeSftBatch([codec.Sft(example)], codec.PadId, 1024, packing: false);
        double Loss() { using var _ = no_grad(); using var scope = NewDisposeScope(); return Losses.SftNll(model, batch).NllSum.Value() / batch.Tokens; }
        double before = Loss();
        using var opt = new AdamW(model.named_parameters());
        sw.Restart();
        using (var scope = NewDisposeScope())
        {
            var (nll, _) = Losses.SftNll(model, batch);
            (nll / batch.Tokens).backward();
            opt.ClipGradNorm(1.0);
            opt.StepWith(learningRate);
        }
        double step = sw.Elapsed.TotalSeconds;
        double after = Loss();
        using var proc = System.Diagnostics.Process.GetCurrentProcess();
        return new()
        {
            ["model"] = modelDir ?? "Qwen3-0.6B shape, random init (no weights here)", ["parameters"] = model.ParameterCount(),
            ["tokens"] = batch.Ids.shape[1], ["loss_tokens"] = batch.Tokens, ["build_seconds"] = Math.Round(build, 1),
            ["sft_loss_before"] = Math.Round(before, 4), ["sft_loss_after_one_step"] = Math.Round(after, 4),
            ["step_seconds"] = Math.Round(step, 1), ["rss_gb"] = Math.Round(proc.WorkingSet64 / 1e9, 2),
            ["device"] = model.Device.type.ToString(),
        };
    }
}
