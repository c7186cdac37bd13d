// One-call entry points for notebooks (and scripts): each is also one CLI command away (`workbook run ...`).
//  1. Quick mode (the CI budgets) is a parameter; the library reads no environment for it. The notebooks' setup.csx
//     reads WORKBOOK_QUICK (set by `workbook notebooks run --quick`) through ParseQuick and passes it on.
//  2. Every sentence a notebook prints about a result is built here from the numbers (Tradeoffs, LandscapeConclusions,
//     TransformerConclusions), so each verdict can flip and is tested on constructed inputs that flip it.
//  3. Between-pipeline comparisons are paired by seed (the pipelines share each seed's base model): Stat.Paired.
using System.Globalization;
using System.Text.Json.Nodes;
using Plotly.NET;
using Workbook.Charts;
using Workbook.Data;
using Workbook.Experiments;
using Workbook.Model;
using Workbook.Theory;
using Workbook.Training;
using static TorchSharp.torch;

namespace Workbook.Reports;

public static class Workbench
{
    /// <summary>The value of WORKBOOK_QUICK as a flag: unset, empty or "0" is off, "1" is on; anything else is an error
    /// rather than a silent full-budget run.</summary>
    public static bool ParseQuick(string? value) =>
        value switch
        {
            null or "" or "0" => false,
            "1" => true,
            _ => throw new WorkbookException($"WORKBOOK_QUICK: expected 0 or 1, got '{value}'"),
        };

    /// <summary>WORKBOOK_REUSE: 1 (default) copies identical finished units from earlier runs
    /// (ExperimentRunner.Reuse), 0 trains everything again.</summary>
    public static bool ReuseRuns =>
        Environment.GetEnvironmentVariable("WORKBOOK_REUSE") switch
        {
            null or "" or "1" => true,
            "0" => false,
            var v => throw new WorkbookException($"WORKBOOK_REUSE: expected 0 or 1, got '{v}'"),
        };

    /// <summary>WORKBOOK_RUNS, else ../runs (notebooks run in notebooks/).</summary>
    public static string RunsRoot =>
        Environment.GetEnvironmentVariable("WORKBOOK_RUNS") is { Length: > 0 } r
            ? r
            : Path.GetFullPath(Path.Combine("..", "runs"));

    /// <summary>Runs pipelines with the default config (the quick one when <paramref name="quick"/>) and returns
    /// summary.json; report.html is written too. The same as
    /// `./workbook run &lt;pipeline&gt; [--quick] [--set ...]`.</summary>
    public static JsonObject Run(string[] pipelines, bool quick, params string[] overrides)
    {
        var cfg = ExperimentConfig.Load(null, overrides);
        if (quick)
            cfg = cfg.Quick();
        var name =
            (quick ? "quick-" : "")
            + (pipelines.Length == ExperimentConfig.Pipelines.Length ? "all" : string.Join("+", pipelines));
        var runDir = ExperimentRunner.NewRunDir(RunsRoot, name);
        // a notebook shows results: a unit an earlier finished run computed identically is copied, and the log says so
        var runner = new ExperimentRunner(cfg, runDir, RunsRoot, Console.WriteLine) { Reuse = ReuseRuns };
        var (summary, _) = runner.RunAndReport(pipelines);
        Console.WriteLine($"run folder: {runDir}");
        return summary;
    }

    public static GenericChart LossChart(JsonObject summary, string pipeline) =>
        CurveCharts.Pipeline(summary, pipeline).loss;

    public static GenericChart RewardChart(JsonObject summary, string pipeline) =>
        CurveCharts.Pipeline(summary, pipeline).reward;

    /// <summary>What notebook 05 runs for the frontier: the four pipelines and the mixed methods
    /// (ExperimentConfig.Methods); the full run adds the controls, drawn greyed (quick mode leaves them out to stay
    /// cheap).</summary>
    public static string[] FrontierPipelines(bool quick) =>
        quick
            ? [.. ExperimentConfig.Pipelines, .. ExperimentConfig.Methods]
            : [.. ExperimentConfig.Pipelines, .. ExperimentConfig.Controls, .. ExperimentConfig.Methods];

    /// <summary>The decoupling frontier of a run's summary (final SFT loss against final strict reward, 95% CIs,
    /// the Pareto front, controls greyed): the report's first chart.</summary>
    public static GenericChart FrontierChart(JsonObject summary) => Charts.FrontierChart.Build(summary);

    /// <summary>The frontier's computed sentence: which pipelines are on the front, their paired differences against
    /// sft-then-rl with 95% CIs, and whether the CIs separate them.</summary>
    public static string FrontierStatement(JsonObject summary) =>
        summary["statements"]?["frontier"]?.GetValue<string>()
        ?? throw new WorkbookException("summary: no frontier statement (written by Summary.Build since issue 14)");

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

    /// <summary>The landscape constants measured on the small transformer (Theory/TransformerLandscape.cs): the base
    /// model of the default config (cached; trained if missing), in float64, SFT then RL on a candidate set with exact
    /// objectives. Writes landscape.json (with config and versions) into a new run folder. The same as
    /// `./workbook landscape [--quick]`; <paramref name="quick"/> picks the quick experiment config and, without
    /// <paramref name="options"/>, the quick options.</summary>
    public static TransformerLandscapeResult TransformerLandscape(
        bool quick,
        TransformerLandscapeOptions? options = null,
        string? runsRoot = null,
        Action<string>? log = null
    )
    {
        runsRoot ??= RunsRoot;
        log ??= Console.WriteLine;
        var cfg = ExperimentConfig.Load(null, []);
        if (quick)
            cfg = cfg.Quick();
        var o = options ?? (quick ? new TransformerLandscapeOptions().Quick() : new TransformerLandscapeOptions());
        o.Validate(); // bad input fails before a run folder exists
        var runDir = ExperimentRunner.NewRunDir(runsRoot, (quick ? "quick-" : "") + "landscape");
        try
        {
            return TransformerLandscape(cfg, o, runsRoot, runDir, log);
        }
        catch
        {
            RunFolders.RemoveIfEmpty(runDir); // a failure leaves no empty run folder behind
            throw;
        }
    }

    static TransformerLandscapeResult TransformerLandscape(
        ExperimentConfig cfg,
        TransformerLandscapeOptions o,
        string runsRoot,
        string runDir,
        Action<string> log
    )
    {
        var runner = new ExperimentRunner(cfg, runDir, runsRoot, log);
        long seed = cfg.SeedBase;
        using var model = Checkpoint.Load(runner.BaseModel(seed), ScalarType.Float64, CPU);
        var result = Theory.TransformerLandscape.Run(model, runner.Codec, runner.Task.Eval, runner.Task.Reward, o, log);
        Directory.CreateDirectory(runDir);
        var jo = new System.Text.Json.JsonSerializerOptions(TrainOptions.Json)
        {
            NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
        };
        var json = new JsonObject
        {
            ["options"] = System.Text.Json.JsonSerializer.SerializeToNode(o, jo),
            ["experiment_config"] = System.Text.Json.JsonSerializer.SerializeToNode(cfg, jo),
            ["base_seed"] = seed,
            ["versions"] = System.Text.Json.JsonSerializer.SerializeToNode(ExperimentRunner.Versions()),
            ["result"] = System.Text.Json.JsonSerializer.SerializeToNode(result, jo),
        };
        AtomicFile.WriteAllText(
            Path.Combine(runDir, "landscape.json"),
            json.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true })
        );
        var (sft, rl, thr) = TheoryCharts.TransformerLandscape(result);
        var html = new System.Text.StringBuilder("<h1>The landscape view on the small transformer</h1>")
            .Append("<p><b>Provenance.</b> The statements checked here are our reconstruction of the paper's v2 PL ")
            .Append("results (notes/paper.md §3), not quotations.</p><ul>");
        foreach (var line in Theory.TransformerLandscape.Describe(result))
            html.Append("<li>").Append(HtmlPage.E(line)).Append("</li>");
        html.Append("</ul>").Append(CurveCharts.Html(sft)).Append(CurveCharts.Html(rl)).Append(CurveCharts.Html(thr));
        HtmlPage.Write(Path.Combine(runDir, "landscape.html"), "landscape", html.ToString());
        log($"landscape: {Path.Combine(runDir, "landscape.json")} and landscape.html");
        return result;
    }

    /// <summary>
    /// The paper's model at CPU scale: builds Qwen3-0.6B (596,049,920 parameters; random init in bf16) or loads a real
    /// folder, and runs one AdamW step of SFT on one CoLA-format example with the real Qwen3 tokenizer and the full
    /// vocabulary. Returns what happened (parameters, loss before/after, seconds, RSS), so a reader sees the real model
    /// run. On a CPU without libtorch's fast bf16 matmul (<see cref="Devices.MissingBf16Flags()"/>) it builds the
    /// model and says why the step was not run, unless <paramref name="allowSlowBf16"/> or WORKBOOK_ALLOW_SLOW_BF16=1.
    /// "statement" says what happened, computed from these numbers.
    /// </summary>
    public static Dictionary<string, object> PaperScaleStep(
        string? modelDir = null,
        double learningRate = 1e-5,
        bool allowSlowBf16 = false
    )
    {
        var task = GrammarTask.Create(0, new TaskOptions { TrainSize = 1, EvalSize = 1 });
        var sw = System.Diagnostics.Stopwatch.StartNew();
        // Qwen3's full vocabulary: a fresh model gets Qwen3's ids, a folder speaks its own (ModelSetup)
        var codec = ModelSetup.Codec(modelDir, task, fullVocabulary: true);
        using var model = ModelSetup.Model(
            modelDir,
            _ => Qwen3Config.Qwen3_0_6B,
            codec.Vocab.Size,
            ScalarType.BFloat16,
            CPU,
            seed: 1
        );
        double build = sw.Elapsed.TotalSeconds;
        var example = task.Train[0];
        var batch = Losses.MakeSftBatch([codec.Sft(example)], codec.PadId, 1024, packing: false);
        var r = new Dictionary<string, object>
        {
            ["model"] = modelDir ?? "Qwen3-0.6B shape, random init (no weights here)",
            ["parameters"] = model.ParameterCount(),
            ["tokens"] = batch.Ids.shape[1],
            ["loss_tokens"] = batch.Tokens,
            ["build_seconds"] = Math.Round(build, 1),
        };
        bool refused = false;
        if (!allowSlowBf16)
            try
            {
                Devices.CheckDTypeFast(ScalarType.BFloat16, model.Device.type, "the paper-scale step");
            }
            catch (WorkbookException)
            {
                refused = true;
            }
        if (refused)
        {
            r["sft_step"] = "not run";
            r["statement"] =
                $"The model built ({Count(model.ParameterCount())} parameters, {N(build, "0.0")} s); its bf16 SFT step "
                + $"was not run: this CPU lacks {string.Join(", ", Devices.MissingBf16Flags())}, which libtorch's fast "
                + "bf16 matmul (oneDNN) needs, and its fallback measured 15-47 times slower than f32 (README, Platform "
                + $"notes). Set {Devices.AllowSlowBf16}=1 to run it anyway.";
            return r;
        }
        double Loss()
        {
            using var _ = no_grad();
            using var scope = NewDisposeScope();
            return Losses.SftNll(model, batch).NllSum.Value() / batch.Tokens;
        }
        double before = Loss();
        using var opt = new AdamW(model.named_parameters());
        sw.Restart();
        using (var scope = NewDisposeScope())
        {
            using (model.ForBackward()) // closed before the step: it throws if an in-place backward failed
            {
                var (nll, _) = Losses.SftNll(model, batch);
                nll.Over(batch.Tokens).backward();
            }
            opt.ClipGradNorm(1.0);
            opt.StepWith(learningRate);
        }
        double step = sw.Elapsed.TotalSeconds;
        double after = Loss();
        using var proc = System.Diagnostics.Process.GetCurrentProcess();
        (before, after) = (Math.Round(before, 4), Math.Round(after, 4)); // the statement says the numbers shown
        r["sft_step"] = "run";
        r["sft_loss_before"] = before;
        r["sft_loss_after_one_step"] = after;
        r["step_seconds"] = Math.Round(step, 1);
        r["rss_gb"] = Math.Round(proc.WorkingSet64 / 1e9, 2);
        r["device"] = model.Device.type.ToString();
        r["huge_pages"] = Memory.HugePages;
        r["statement"] =
            $"The model built ({Count(model.ParameterCount())} parameters, {N(build, "0.0")} s). One AdamW step of SFT "
            + $"at learning rate {learningRate.ToString("G3", CultureInfo.InvariantCulture)} on one CoLA-format "
            + $"example ({batch.Tokens} loss tokens) took {N(step, "0.0")} s at {N(proc.WorkingSet64 / 1e9, "0.00")} "
            + $"GB resident, and the example's loss {Change(after - before, "0.0000")}, from {N(before, "0.0000")} "
            + $"to {N(after, "0.0000")}.";
        return r;
    }

    // ---- sentences computed from the numbers ----

    static string N(double x, string f = "0.000") => x.ToString(f, CultureInfo.InvariantCulture);

    static string Count(long n) => n.ToString("N0", CultureInfo.InvariantCulture);

    static string Signed(double x) => x.ToString("+0.000;-0.000;0.000", CultureInfo.InvariantCulture);

    static string Ci(Stat s) => s.Interval(Signed);

    /// <summary>"rose by 0.012" / "fell by 0.012" / "did not change", from the sign of a change.</summary>
    public static string Change(double delta, string f = "0.000") =>
        double.IsNaN(delta) ? "is undefined (NaN)"
        : delta > 0 ? $"rose by {N(delta, f)}"
        : delta < 0 ? $"fell by {N(-delta, f)}"
        : "did not change";

    /// <summary>Per-seed values of a summary field, keyed by seed (summary "seeds" gives the order of
    /// "per_seed").</summary>
    public static Dictionary<long, double> PerSeed(JsonObject summary, string pipeline, string field)
    {
        var seeds = summary["seeds"]!.AsArray().Select(x => x!.GetValue<long>()).ToArray();
        var vals = summary["pipelines"]![pipeline]![field]!["per_seed"]!
            .AsArray()
            .Select(x => x is null ? double.NaN : x.GetValue<double>())
            .ToArray();
        if (vals.Length != seeds.Length)
            throw new WorkbookException(
                $"summary: {pipeline}.{field} has {vals.Length} per-seed values for {seeds.Length} seeds"
            );
        return seeds.Zip(vals).ToDictionary(p => p.First, p => p.Second);
    }

    /// <summary>The final SFT loss and strict reward of pipeline a against b, paired by seed: (loss a−b,
    /// reward a−b).</summary>
    public static (Stat loss, Stat reward) Compare(JsonObject summary, string a, string b) =>
        (
            Stat.Paired(PerSeed(summary, a, "final_sft_loss"), PerSeed(summary, b, "final_sft_loss")),
            Stat.Paired(PerSeed(summary, a, "final_reward"), PerSeed(summary, b, "final_reward"), (0, 1))
        );

    /// <summary>Notebook 05's conclusions: each pipeline's final SFT loss and strict reward, then every comparison
    /// that matters (the two stage orders against each other; interleaved and joint against each order and each
    /// other), paired by seed with 95% CIs, each with a verdict computed from those intervals.</summary>
    public static List<string> Tradeoffs(JsonObject summary)
    {
        var pipes = summary["pipelines"]!.AsObject();
        var lines = new List<string>();
        foreach (var (name, _) in pipes)
        {
            var loss = Stat.Of(PerSeed(summary, name, "final_sft_loss").Values.ToArray());
            var reward = Stat.Bounded(PerSeed(summary, name, "final_reward").Values.ToArray(), 0, 1);
            lines.Add(
                $"{name}: final SFT loss {N(loss.Mean)} (95% CI {loss.Interval(x => N(x))}), "
                    + $"final strict reward {N(reward.Mean)} (95% CI {reward.Interval(x => N(x))})."
            );
        }
        var pairs = new List<(string, string)> { ("sft-then-rl", "rl-then-sft") };
        foreach (var mixed in new[] { "interleaved", "joint" })
        foreach (var order in new[] { "sft-then-rl", "rl-then-sft" })
            pairs.Add((mixed, order));
        pairs.Add(("interleaved", "joint"));
        foreach (var (a, b) in pairs.Where(p => pipes.ContainsKey(p.Item1) && pipes.ContainsKey(p.Item2)))
        {
            var (loss, reward) = Compare(summary, a, b);
            lines.Add(
                $"{a} against {b} (paired by seed, {a} minus {b}): SFT loss {Signed(loss.Mean)} "
                    + $"(95% CI {Ci(loss)}), strict reward {Signed(reward.Mean)} (95% CI {Ci(reward)}): "
                    + $"{PairedVerdict.Of(loss, reward)}."
            );
        }
        return lines;
    }

    /// <summary>Notebook 04's conclusions on the softmax-linear model, from the trajectory and the one-step
    /// check.</summary>
    public static List<string> LandscapeConclusions(LandscapeResult r, Landscape.ThresholdCheck threshold)
    {
        var first = r.Trajectory[0];
        var last = r.Trajectory[^1];
        string F4(double x) => N(x, "0.0000");
        var lines = new List<string>
        {
            $"After {last.T} RL steps the SFT loss {Change(last.SftGap - first.SftGap, "0.0000")} "
                + $"({(last.SftGap <= last.SftUpperBound ? "within" : "above")} its smoothness bound "
                + $"{F4(last.SftUpperBound)}); the RL objective gap "
                + $"{Change(last.ObjectiveGap - first.ObjectiveGap, "0.0000")}, "
                + $"from {F4(first.ObjectiveGap)} to {F4(last.ObjectiveGap)}.",
            r.UpperBoundViolations == 0 && r.ContractionViolations == 0
                ? $"Both bounds held at every one of the {r.Trajectory.Count} points (smoothness and PL contraction)."
                : $"Bound violations over {r.Trajectory.Count} points: smoothness {r.UpperBoundViolations}, "
                    + $"PL contraction {r.ContractionViolations}.",
        };
        int steps = last.T;
        string measured =
            r.MeasuredTStar < steps
                ? $"measured T* = {r.MeasuredTStar}, before the end of the {steps}-step run"
                : $"measured T* = {r.MeasuredTStar}, the last step run: Φ was still rising, "
                    + "so the measurement says nothing about stopping early";
        string predicted = double.IsNaN(r.PredictedTStar)
            ? "no prediction (κ is outside (0, 1))"
            : $"predicted T* = {N(r.PredictedTStar, "0.0")}"
                + (r.PredictedTStar < steps ? "" : $", beyond the {steps} steps run");
        bool bothEarly = r.MeasuredTStar < steps && r.PredictedTStar < steps;
        string ratio =
            r.MeasuredTStar > 0 ? $", {N(r.PredictedTStar / r.MeasuredTStar, "0.00")} times the measured T*" : "";
        lines.Add(
            $"Best stopping time for λ = {r.Lambda}: {measured}; {predicted}"
                + (
                    !bothEarly ? ". They do not both say stop early."
                    : r.PredictedTStar < 1
                        ? ". Both say stop early, the prediction (which maximises a loose lower bound) "
                            + "before the first step."
                    : $". Both say stop early; the prediction maximises a loose lower bound{ratio}."
                )
        );
        var t = threshold;
        string fell =
            t.SufficientButNotDecreased == 0
                ? "the SFT loss fell every time"
                : $"the SFT loss did not fall at {t.SufficientButNotDecreased} of them, "
                    + "so the condition failed as a sufficient one";
        string gap =
            t.SufficientButGapBelowThreshold == 0
                ? "the SFT gap exceeded the gap the condition implies every time."
                : $"the SFT gap was below the gap the condition implies at {t.SufficientButGapBelowThreshold} of them, "
                    + "which contradicts the derivation.";
        lines.Add(
            t.SufficientHeld == 0
                ? $"One-step threshold: the sufficient condition held at none of {t.Steps} points, "
                    + $"so this run does not test it; the SFT loss fell at {t.Decreased}."
                : $"One-step threshold: the sufficient condition held at {t.SufficientHeld} of {t.Steps} points; "
                    + $"{fell}; {gap}"
        );
        return lines;
    }

    /// <summary>Notebook 04's conclusions on the small transformer.</summary>
    public static List<string> TransformerConclusions(TransformerLandscapeResult tl)
    {
        double rise = tl.Last.SftLoss - tl.SftLossStart;
        var lines = new List<string>
        {
            $"Transformer: after {tl.Last.T} RL steps the SFT loss {Change(rise)} "
                + $"({(rise <= tl.Last.RiseUpperBound ? "within" : "above")} the estimated-ℓ_S bound "
                + $"{N(tl.Last.RiseUpperBound)}).",
            $"Transformer: at the end of RL ({tl.TotalRlSteps} steps) the SFT-loss change was "
                + $"{Signed(tl.MeasuredFinalRise)}; the tilted optimum predicts {Signed(tl.PredictedFinalRise)}"
                + (
                    Math.Abs(tl.PredictedFinalRise) > 1e-12
                        ? $", so measured/predicted = {N(tl.MeasuredFinalRise / tl.PredictedFinalRise, "0.00")}."
                        : "."
                ),
        };
        var lowered = tl.Threshold.Where(p => p.SftDecreased).ToList();
        var atOptimum = tl.Threshold[^1];
        lines.Add(
            $"Transformer: one RL step lowered the SFT loss from {lowered.Count} of {tl.Threshold.Count} "
                + "SFT snapshots"
                + (lowered.Count > 0 ? $" (SFT gaps {string.Join(", ", lowered.Select(p => N(p.SftGap)))})" : "")
                + $"; from the SFT optimum (gap {atOptimum.SftGap.ToString("E1", CultureInfo.InvariantCulture)}) it "
                + $"{(atOptimum.SftDecreased ? "lowered" : "raised")} it."
        );
        var m = tl.AtStart;
        string verdict =
            m.Bound <= 0
                ? "vacuous, because ε ≥ ½: at least half of a gradient's M-energy lies off M's top eigenvector."
            : Math.Abs(m.Cos) >= m.Bound - 1e-9 ? "informative, and it held."
            : "informative, and it failed: the measured |cos| is below it.";
        lines.Add(
            $"Transformer: the misalignment bound at θ_0 is |cos| ≥ {N(m.Bound, "0.00")} "
                + $"(ε = {N(m.Epsilon, "0.00")}) against a measured cos of {N(m.Cos)}: {verdict}"
        );
        return lines;
    }
}
