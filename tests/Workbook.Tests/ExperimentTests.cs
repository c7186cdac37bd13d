using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using Workbook.Experiments;
using Workbook.Model;
using Workbook.Reports;
using Workbook.Training;

namespace Workbook.Tests;

public class ExperimentTests
{
    /// <summary>A complete experiment in seconds: the real pipelines with budgets far too small to show
    /// anything.</summary>
    public static ExperimentConfig Tiny =>
        ExperimentConfig.Load(
            null,
            [
                "task.train_size=200",
                "task.eval_size=8",
                "hidden_size=32",
                "num_hidden_layers=1",
                "intermediate_size=64",
                "seeds=2",
                "base.max_steps=6",
                "sft.max_steps=4",
                "sft.per_device_train_batch_size=8",
                "grpo.max_steps=2",
                "grpo.per_device_train_batch_size=8",
                "grpo.num_generations=4",
                "grpo.max_completion_length=8",
                "evals_per_stage=1",
                "interleave_rounds=2",
                "c1_samples=16",
                "guarded.stop_check_steps=1",
            ]
        );

    [Fact]
    public void Confidence_intervals_use_the_t_distribution()
    {
        var s = Stat.Of([1.0, 2.0, 3.0]);
        Assert.Equal(2.0, s.Mean, 12);
        // sd = 1, n = 3: half-width t_{0.975,2} / sqrt(3) = 4.303 / 1.732
        Assert.Equal(2.0 - 4.303 / Math.Sqrt(3), s.Ci95[0], 6);
        Assert.True(Stat.Of([0.2, 0.25, 0.3]).AboveZero);
        Assert.False(Stat.Of([-0.1, 0.3, 0.2]).AboveZero);
        Assert.True(Stat.Of([-0.4, -0.5, -0.3]).BelowZero);
        Assert.True(double.IsNaN(Stat.Of([1.0]).Ci95[0]));
    }

    [Theory]
    [InlineData("grpo.num_generations=1", "num_generations")]
    [InlineData("grpo.beta=-0.5", "beta")]
    [InlineData("sft.learning_rate=0", "learning_rate")]
    [InlineData("seeds=0", "seeds")]
    [InlineData("no_such_key=1", "no_such_key")]
    [InlineData("model=\"/no/such/model\"", "model folder not found")]
    [InlineData("task.reward=\"exact\"", "task.reward")]
    [InlineData("grpo.kl_mode=\"both\"", "kl_mode")]
    [InlineData("sft.seed=7", "sft.seed")]
    [InlineData("grpo.eval_steps=5", "evals_per_stage")]
    [InlineData("sft.dtype=\"bf16\"", "top level")]
    [InlineData("c1_samples=4", "c1_samples")]
    public void Bad_configs_fail_before_anything_is_created(string set, string expect)
    {
        var e = Assert.Throws<WorkbookException>(() => ExperimentConfig.Load(null, [set]));
        Assert.Contains(expect, e.Message);
    }

    [Fact]
    public void A_dataset_that_does_not_load_fails_before_the_run_folder_exists()
    {
        var root = TestData.TempDir();
        var bad = Path.Combine(root, "bad.tsv");
        File.WriteAllText(bad, "x\t3\t\tBad label.\n");
        var runDir = Path.Combine(root, "run");
        var cfg = Tiny with { Dataset = $"cola:{bad}" };
        var e = Assert.Throws<WorkbookException>(() => new ExperimentRunner(cfg, runDir, root));
        Assert.Contains("bad.tsv:1", e.Message);
        Assert.False(Directory.Exists(runDir));
        Assert.Throws<WorkbookException>(() => new ExperimentRunner(Tiny with { Dataset = "imagenet" }, runDir, root));
        var ok = new ExperimentRunner(Tiny, runDir, root);
        Assert.Throws<WorkbookException>(() => ok.Run(["sft-then-rl", "bogus"]));
        Assert.False(Directory.Exists(runDir));
    }
}

/// <summary>One tiny experiment (every pipeline and control, two seeds), run once for the facts of
/// <see cref="TinyExperimentTests"/>.</summary>
public sealed class TinyExperiment
{
    public string Root { get; }
    public string RunDir { get; }
    public Dictionary<string, List<SeedResult>> Results { get; }
    public JsonNode Summary { get; }

    public TinyExperiment()
    {
        Root = TestData.TempDir();
        RunDir = ExperimentRunner.NewRunDir(Root, "tiny");
        var runner = new ExperimentRunner(ExperimentTests.Tiny, RunDir, Root);
        Results = runner.Run(ExperimentConfig.Resolve("all", "all"));
        var summary = Experiments.Summary.Build(
            ExperimentTests.Tiny,
            Results,
            runner.StrictKey,
            runner.LenientKey,
            runner.Task.Design,
            ExperimentRunner.Versions(),
            runner.SeedList
        );
        Experiments.Summary.Save(RunDir, summary);
        Summary = JsonNode.Parse(File.ReadAllText(Path.Combine(RunDir, "summary.json")))!;
    }
}

public class TinyExperimentTests(TinyExperiment x) : IClassFixture<TinyExperiment>
{
    [Fact]
    public void The_summary_has_per_seed_changes_predictions_statements_and_comparisons()
    {
        var s = x.Summary;
        foreach (var key in new[] { "sft_loss_change_during_rl", "reward_change_during_rl" })
            Assert.Equal(2, s["pipelines"]!["sft-then-rl"]![key]!["per_seed"]!.AsArray().Count);
        Assert.Equal(2, s["pipelines"]!["sft-then-rl"]!["prediction"]!["predicted"]!["per_seed"]!.AsArray().Count);
        Assert.Equal(2, s["pipelines"]!["rl-then-sft"]!["reward_change_during_sft"]!["ci95"]!.AsArray().Count);
        Assert.NotNull(s["pipelines"]!["rl-then-sft"]!["sft_loss_change_during_sft"]!["mean"]);
        Assert.Equal(new long[] { 1000, 1001 }, s["seeds"]!.AsArray().Select(v => v!.GetValue<long>()));
        Assert.NotNull(s["statements"]!["controls"]);
        Assert.NotNull(s["comparisons"]!["interleaved - sft-then-rl"]);
        Assert.NotNull(s["prediction_held"]!["sft-then-rl"]);
        Assert.NotNull(s["prediction_held"]!["rl-then-sft"]);
    }

    [Fact]
    public void Each_control_has_its_changes_and_a_paired_difference_against_the_main_order()
    {
        var s = x.Summary;
        Assert.Equal(ExperimentConfig.Controls, s["controls"]!.AsObject().Select(kv => kv.Key));
        foreach (var (name, c) in s["controls"]!.AsObject())
        {
            foreach (
                var key in new[]
                {
                    "sft_loss_change_during_rl",
                    "sft_nll_per_response_change_during_rl",
                    "main_minus_control_sft_loss_change",
                }
            )
            {
                Assert.Equal(2, c![key]!["per_seed"]!.AsArray().Count);
                Assert.Equal(2, c[key]!["ci95"]!.AsArray().Count);
                Assert.NotNull(c[key]!["mean"]);
            }
            Assert.Equal(name == "fresh-optimizer", c!["prediction"] is null); // no RL stage, no prediction
        }
    }

    [Fact]
    public void Controls_with_sft_then_rls_sft_stage_reuse_it_instead_of_training_it_again()
    {
        Assert.False(Directory.Exists(Path.Combine(x.RunDir, "lenient-reward", "seed-1000", "1-sft")));
        Assert.True(Directory.Exists(Path.Combine(x.RunDir, "no-format-mix", "seed-1000", "1-sft")));
    }

    [Fact]
    public void A_finished_stage_keeps_its_weights_but_not_its_optimizer_state_and_says_so_if_resumed()
    {
        var stage = Path.Combine(x.RunDir, "sft-then-rl", "seed-1000", "2-rl");
        var ckpt = TrainerCheckpoint.Latest(stage)!;
        Assert.True(File.Exists(Path.Combine(ckpt, "model.safetensors")));
        Assert.False(File.Exists(Path.Combine(ckpt, TrainerCheckpoint.OptimizerFile)));
        using var model = Checkpoint.Load(ckpt); // still a --model
        using var opt = new AdamW(model.named_parameters());
        var e = Assert.Throws<WorkbookException>(() => TrainerCheckpoint.Load(ckpt, model, opt));
        Assert.Contains("cannot resume", e.Message);
        // an unfinished stage's state is its resume point: never dropped
        var unfinished = TestData.TempDir();
        Assert.Throws<InvalidOperationException>(() => TrainerCheckpoint.DropOptimizerState(unfinished));
    }

    [Fact]
    public void Reward_and_success_rate_intervals_stay_inside_0_and_1()
    {
        foreach (var (_, p) in x.Summary["pipelines"]!.AsObject())
        foreach (var b in p!["final_reward"]!["ci95"]!.AsArray().Where(b => b is not null))
            Assert.InRange(b!.GetValue<double>(), 0, 1);
        // the SFT policy's P(r = 1) behind each prediction: a t interval left [0, 1] at 2-3 seeds
        var rates = x.Summary["pipelines"]!
            .AsObject()
            .Concat(x.Summary["controls"]!.AsObject())
            .Select(kv => kv.Value!["prediction"]?["sft_policy_success_rate"])
            .Where(r => r is not null)
            .ToList();
        Assert.NotEmpty(rates);
        foreach (var r in rates)
        foreach (var b in r!["ci95"]!.AsArray().Where(b => b is not null))
            Assert.InRange(b!.GetValue<double>(), 0, 1);
    }

    [Fact]
    public void The_run_folder_holds_its_inputs_and_each_stage_its_logs_and_the_base_models_are_cached()
    {
        foreach (var f in new[] { "config.json", "versions.json", "seeds.json", "vocab.json" })
            Assert.True(File.Exists(Path.Combine(x.RunDir, f)), f);
        var stage = Path.Combine(x.RunDir, "interleaved", "seed-1000", "4-round2-rl");
        Assert.True(File.Exists(Path.Combine(stage, "metrics.jsonl")) && File.Exists(Path.Combine(stage, "done.json")));
        Assert.NotEmpty(
            Directory
                .GetDirectories(Path.Combine(stage, "tensorboard"))
                .Concat(Directory.GetFiles(Path.Combine(stage, "tensorboard")))
        );
        // one cached base model per seed, reused by every pipeline
        Assert.Equal(
            2,
            Directory
                .GetDirectories(Path.Combine(x.Root, ".cache", "base"))
                .SelectMany(Directory.GetDirectories)
                .Count()
        );
    }

    [Fact]
    public void The_guarded_stage_scores_fresh_prompts_at_every_check_and_the_summary_weighs_the_rule_on_them()
    {
        foreach (var r in x.Results["guarded"])
        {
            var stop = r.Stop!;
            Assert.Equal(stop.Evals.Select(e => e.Step), stop.Confirm.Select(e => e.Step));
            // other prompts, so other values (the tiny model's rewards may tie; its SFT losses do not)
            Assert.NotEqual(stop.Evals.Select(e => e.L), stop.Confirm.Select(e => e.L));
        }
        var confirm = x.Summary["stop_rule"]!["confirm"]!;
        Assert.Equal(2, confirm["per_seed"]!.AsArray().Count);
        Assert.Contains(
            "On fresh prompts the rule never saw",
            x.Summary["statements"]!["stop rule"]!.GetValue<string>()
        );
    }

    [Fact]
    public void Resuming_a_finished_run_retrains_nothing_and_gives_the_same_curves()
    {
        var metrics = Path.Combine(x.RunDir, "sft-then-rl", "seed-1001", "2-rl", "metrics.jsonl");
        var before = File.GetLastWriteTimeUtc(metrics);
        var timing = File.ReadAllText(Path.Combine(x.RunDir, "timing.json"));
        var again = new ExperimentRunner(ExperimentTests.Tiny, x.RunDir, x.Root).Run(
            ExperimentConfig.Resolve("all", "all")
        );
        Assert.Equal(before, File.GetLastWriteTimeUtc(metrics));
        // the first session's timing and versions are kept; the resumed session's go beside them
        Assert.Equal(timing, File.ReadAllText(Path.Combine(x.RunDir, "timing.json")));
        var resumed = JsonNode.Parse(File.ReadAllText(Path.Combine(x.RunDir, "timing-2.json")))!;
        Assert.True(resumed["resumed"]!.GetValue<bool>());
        Assert.Null(JsonNode.Parse(timing)!["resumed"]);
        Assert.True(File.Exists(Path.Combine(x.RunDir, "versions-2.json")));
        Assert.Equal(
            x.Results["joint"][1].Curve.Select(p => p.Metrics["eval_sft_loss"]),
            again["joint"][1].Curve.Select(p => p.Metrics["eval_sft_loss"])
        );
    }

    [Fact]
    public void The_report_is_self_contained_with_a_chart_per_pipeline_and_metric()
    {
        var s = x.Summary;
        var runDir = x.RunDir;
        var report = Report.Write(runDir);
        var html = File.ReadAllText(report);
        Assert.DoesNotMatch("<script[^>]+src=\"https?://", html); // nothing loaded from a CDN
        Assert.Contains("Plotly.newPlot", html);
        Assert.True(html.Length > 3_000_000, "plotly.js must be embedded");
        int inLibrary = System
            .Text.RegularExpressions.Regex.Matches(Workbook.Charts.CurveCharts.PlotlyJs(), "Plotly.newPlot")
            .Count;
        // the frontier, the forgetting charts, the stop rule's Φ, then (loss, reward) per pipeline
        int charts =
            1
            + Workbook.Charts.ForgettingChart.Charts(s.AsObject()).Count
            + (s["stop_rule"] is null ? 0 : 1)
            + 2 * s["pipelines"]!.AsObject().Count;
        Assert.Equal(charts, System.Text.RegularExpressions.Regex.Matches(html, "Plotly.newPlot").Count - inLibrary);
        ChromiumRender.AssertChartsRender(report, minCharts: charts);
    }

    static string CopyRun(string from, string root)
    {
        var to = Path.Combine(root, Path.GetFileName(from));
        UnitReuse.CopyTree(from, to);
        return to;
    }

    [Fact]
    public void Reuse_copies_identical_finished_units_and_gives_the_same_numbers()
    {
        var root = TestData.TempDir();
        var donor = CopyRun(x.RunDir, root);
        var runDir = ExperimentRunner.NewRunDir(root, "again");
        string[] pipelines = ["sft-then-rl", "rl-then-sft", "lenient-reward", "chord"];
        var again = new ExperimentRunner(ExperimentTests.Tiny, runDir, root) { Reuse = true }.Run(pipelines);
        var timing = JsonNode.Parse(File.ReadAllText(Path.Combine(runDir, "timing.json")))!["reused"]!.AsObject();
        Assert.Equal(8, timing.Count);
        foreach (var p in pipelines)
        foreach (var (mine, theirs) in again[p].Zip(x.Results[p]))
        {
            var record = Path.Combine(runDir, p, $"seed-{mine.Seed}", UnitReuse.Record);
            Assert.Contains(Path.Combine(donor, p, $"seed-{mine.Seed}"), File.ReadAllText(record));
            Assert.Equal(theirs.Curve.SelectMany(c => c.Metrics.Values), mine.Curve.SelectMany(c => c.Metrics.Values));
            Assert.Equal(theirs.Prediction?.Mean, mine.Prediction?.Mean);
        }
        // the shared SFT stage is read from this run's sft-then-rl, as when trained: not copied again
        Assert.False(Directory.Exists(Path.Combine(runDir, "lenient-reward", "seed-1000", "1-sft")));
        // without Reuse nothing is copied
        var plain = ExperimentRunner.NewRunDir(root, "plain");
        new ExperimentRunner(ExperimentTests.Tiny, plain, root).Run(["fresh-optimizer"]);
        Assert.False(File.Exists(Path.Combine(plain, "fresh-optimizer", "seed-1000", UnitReuse.Record)));
        Assert.Null(JsonNode.Parse(File.ReadAllText(Path.Combine(plain, "timing.json")))!["reused"]);
    }

    [Fact]
    public void Reuse_takes_only_finished_units_of_the_same_config_code_and_machine()
    {
        var root = TestData.TempDir();
        var donor = CopyRun(x.RunDir, root);
        var mine = Path.Combine(root, "mine");
        Directory.CreateDirectory(mine);
        void Files(Func<JsonObject, JsonObject>? config = null, Func<JsonObject, JsonObject>? versions = null)
        {
            var c = JsonNode.Parse(File.ReadAllText(Path.Combine(donor, "config.json")))!.AsObject();
            var v = JsonNode.Parse(File.ReadAllText(Path.Combine(donor, "versions.json")))!.AsObject();
            File.WriteAllText(Path.Combine(mine, "config.json"), (config?.Invoke(c) ?? c).ToJsonString());
            File.WriteAllText(Path.Combine(mine, "versions.json"), (versions?.Invoke(v) ?? v).ToJsonString());
        }
        JsonObject Set(JsonObject o, string key, JsonNode? value)
        {
            o[key] = value;
            return o;
        }
        Files();
        Assert.Equal([donor], UnitReuse.Donors(root, mine));
        Assert.NotNull(UnitReuse.Identity(mine));
        Assert.Null(UnitReuse.WhyNone(mine));
        // seed count, parallelism and the process's own thread count change no unit's numbers
        Files(c => Set(Set(c, "seeds", 5), "jobs", 1), v => Set(v, "threads", "7"));
        Assert.Equal([donor], UnitReuse.Donors(root, mine));
        Files(c => Set(c, "grpo", Set(c["grpo"]!.DeepClone().AsObject(), "beta", 0.5)));
        Assert.Empty(UnitReuse.Donors(root, mine));
        // a file named by path: its contents are not in the config
        Files(c => Set(c, "dataset", "cola:/data/train.tsv"));
        Assert.Null(UnitReuse.Identity(mine)); // even where a donor names the same path
        Assert.Contains("reads a file by path", UnitReuse.WhyNone(mine));
        Files(c => Set(c, "model", "/models/qwen3"));
        Assert.Null(UnitReuse.Identity(mine));
        Files(c => Set(c, "task", Set(c["task"]!.DeepClone().AsObject(), "eval_file", "/data/dev.tsv")));
        Assert.Null(UnitReuse.Identity(mine));
        Files(versions: v => Set(v, "build", "0123456789abcdef"));
        Assert.Empty(UnitReuse.Donors(root, mine));
        Files(versions: v => Set(v, "cpu", "another cpu"));
        Assert.Empty(UnitReuse.Donors(root, mine));
        Files(versions: v => Set(v, "kernel_env", "ATEN_CPU_CAPABILITY=default"));
        Assert.Empty(UnitReuse.Donors(root, mine));
        Files(versions: v => Set(v, "device", "cuda")); // a GPU's numbers are not reproducible to the bit
        Assert.Null(UnitReuse.Identity(mine));
        Assert.Contains("not on CPU", UnitReuse.WhyNone(mine));
        Files(versions: v =>
        {
            v.Remove("build"); // written before builds were recorded: unknown code
            return v;
        });
        Assert.Empty(UnitReuse.Donors(root, mine));
        Files();
        // a resumed donor under other versions is not one computation
        var v2 = JsonNode.Parse(File.ReadAllText(Path.Combine(donor, "versions.json")))!.AsObject();
        File.WriteAllText(Path.Combine(donor, "versions-9.json"), Set(v2, "torchsharp", "0.0.1").ToJsonString());
        Assert.Empty(UnitReuse.Donors(root, mine));
        File.Delete(Path.Combine(donor, "versions-9.json"));
        File.Move(Path.Combine(donor, "summary.json"), Path.Combine(root, "summary.json")); // an unfinished run
        Assert.Empty(UnitReuse.Donors(root, mine));
        File.Move(Path.Combine(root, "summary.json"), Path.Combine(donor, "summary.json"));
        Assert.Equal([donor], UnitReuse.Donors(root, mine));

        (string, string?)[] plan = [("1-sft", "sft-then-rl"), ("2-rl", null)];
        // a stage without done.json: the unit is not finished there, nothing is copied
        File.Delete(Path.Combine(donor, "chord", "seed-1001", "2-rl", "done.json"));
        Assert.Null(UnitReuse.TryCopy([donor], mine, "chord", 1001, plan));
        Assert.False(Directory.Exists(Path.Combine(mine, "chord", "seed-1001")));
        // a unit begun in this run is resumed, never mixed with a copy
        Directory.CreateDirectory(Path.Combine(mine, "chord", "seed-1000", "1-sft"));
        Assert.Null(UnitReuse.TryCopy([donor], mine, "chord", 1000, plan));
        Assert.Empty(Directory.GetFileSystemEntries(Path.Combine(mine, "chord", "seed-1000", "1-sft")));
        Assert.NotNull(UnitReuse.TryCopy([donor], mine, "sft-anchored", 1000, plan));
        Assert.True(File.Exists(Path.Combine(mine, "sft-anchored", "seed-1000", "2-rl", "done.json")));
        // this run has no sft-then-rl: the shared stage comes along as the unit's own
        Assert.True(File.Exists(Path.Combine(mine, "sft-anchored", "seed-1000", "1-sft", "done.json")));
        // the prediction the method reads from sft-then-rl's folder comes along
        Assert.NotEmpty(Directory.GetFiles(Path.Combine(mine, "sft-then-rl", "seed-1000"), "prediction-*.json"));
        Assert.Empty(Directory.GetDirectories(Path.Combine(mine, "sft-anchored"), ".tmp-*"));
    }
}

/// <summary>Opens an HTML file in headless Chromium (Debian's chromium, installed by .ci/run) and checks that plotly
/// drew SVG.</summary>
public static class ChromiumRender
{
    public static string Browser =>
        new[] { "/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome" }.FirstOrDefault(File.Exists)
        ?? throw new InvalidOperationException(
            "headless Chromium is needed for this test: apt-get install chromium (.ci/run does)"
        );

    public static void AssertChartsRender(string htmlPath, int minCharts)
    {
        var profile = TestData.TempDir();
        var psi = new ProcessStartInfo(
            Browser,
            [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                $"--user-data-dir={profile}",
                "--virtual-time-budget=10000",
                "--dump-dom",
                "file://" + Path.GetFullPath(htmlPath),
            ]
        )
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using var p = Process.Start(psi)!;
        var dom = p.StandardOutput.ReadToEnd();
        p.StandardError.ReadToEnd();
        Assert.True(p.WaitForExit(120_000), "chromium did not finish");
        int svgs = System.Text.RegularExpressions.Regex.Matches(dom, "<svg class=\"main-svg\"").Count;
        int lines = System.Text.RegularExpressions.Regex.Matches(dom, "class=\"js-line\"").Count;
        Assert.True(
            svgs >= minCharts,
            $"expected at least {minCharts} rendered plotly charts, found {svgs} main-svg elements"
        );
        Assert.True(lines >= minCharts, $"the charts have no drawn lines ({lines} js-line paths)");
    }
}

public class SweepTests
{
    [Theory]
    [InlineData("", "empty")]
    [InlineData("0.5,x", "'x' is not a number")]
    [InlineData("-1", "outside")]
    [InlineData("0", "outside")]
    [InlineData("NaN", "not a number")]
    public void Bad_beta_lists_are_refused_with_the_option_named(string text, string expect)
    {
        var e = Assert.Throws<WorkbookException>(() => SweepGrid.ParseList("--beta", text, 0, 1e6, minExclusive: true));
        Assert.Contains("--beta", e.Message);
        Assert.Contains(expect, e.Message);
    }

    [Fact]
    public void A_fraction_outside_zero_to_one_is_refused() =>
        Assert.Contains(
            "outside",
            Assert
                .Throws<WorkbookException>(() =>
                    SweepGrid.ParseList("--loose-format-fraction", "0.2,1.5", 0, 1, minExclusive: false)
                )
                .Message
        );

    [Fact]
    public void A_tiny_sweep_writes_the_schema_and_a_resumed_sweep_repeats_no_point()
    {
        var root = TestData.TempDir();
        var cfg = ExperimentTests.Tiny with { Grpo = ExperimentTests.Tiny.Grpo with { LearningRate = 1e-3 } };
        var runDir = ExperimentRunner.NewRunDir(root, "sweep");
        var grid = new SweepGrid([0.5, 1.0], [0.35, 0], Null: "none");
        var s = Sweep.Run(new ExperimentRunner(cfg, runDir, root), grid, _ => { });
        var points = s["points"]!.AsArray();
        Assert.Equal(4, points.Count);
        foreach (var p in points)
        {
            Assert.Equal(2, p!["measured"]!["per_seed"]!.AsArray().Count);
            Assert.Equal(2, p["measured"]!["ci95"]!.AsArray().Count);
            Assert.NotNull(p["predicted"]!["mean"]);
            Assert.Equal(2, p["predicted"]!["ci95"]!.AsArray().Count);
            Assert.NotNull(p["twin"]!["measured"]);
            // where RL fell short of p*: three groups of prompts by π_ref's success rate, covering every prompt
            var groups = p["shortfall_by_reference_success"]!.AsArray();
            Assert.Equal(3, groups.Count);
            Assert.Equal(1.0, groups.Sum(g => g!["prompt_share"]!["mean"]!.GetValue<double>()), 9);
        }
        var counts = Path.Combine(runDir, "sweep", "f0.35", "seed-1000", "beta0.5", "reached-successes.json");
        Assert.True(File.Exists(counts));
        // one SFT stage per (fraction, seed), shared by every beta
        Assert.Equal(2, Directory.GetDirectories(Path.Combine(runDir, "sweep")).Length);
        var rl = Path.Combine(runDir, "sweep", "f0.35", "seed-1000", "beta0.5", "2-rl", "metrics.jsonl");
        var before = File.GetLastWriteTimeUtc(rl);
        var again = Sweep.Run(new ExperimentRunner(cfg, runDir, root), grid, _ => { });
        Assert.Equal(before, File.GetLastWriteTimeUtc(rl));
        Assert.Equal(points.ToJsonString(), again["points"]!.ToJsonString());
        var html = File.ReadAllText(SweepReport.Write(runDir, again));
        Assert.Contains("measured vs predicted", html);
        Assert.Null(points[0]!["coin_null"]);
    }

    [Fact]
    public void A_budget_scaled_as_one_over_beta_runs_those_steps_for_the_real_RL_and_its_null_and_resumes_its_grid()
    {
        var root = TestData.TempDir();
        var cfg = ExperimentTests.Tiny with { Seeds = 1 }; // grpo.max_steps = 2
        var runDir = ExperimentRunner.NewRunDir(root, "sweep");
        var grid = new SweepGrid([0.5, 1.0], [0.35], Twin: false, Null: "all", StepsBeta: 1.0);
        var s = Sweep.Run(new ExperimentRunner(cfg, runDir, root), grid, _ => { });
        int LastStep(string beta, string stage) =>
            Training
                .MetricsLog.Read(Path.Combine(runDir, "sweep", "f0.35", "seed-1000", beta, stage, "metrics.jsonl"))
                .Max(r => (int)r["step"]!);
        Assert.Equal(
            (4, 4, 2, 2),
            (
                LastStep("beta0.5", "2-rl"),
                LastStep("beta0.5", "2-rl-coin"),
                LastStep("beta1", "2-rl"),
                LastStep("beta1", "2-rl-coin")
            )
        );
        var steps = s["points"]!.AsArray().ToDictionary(p => (double)p!["beta"]!, p => (int)p!["rl_steps"]!);
        Assert.Equal(4, steps[0.5]);
        Assert.Equal(2, steps[1.0]);
        Assert.Equal(1.0, (double)s["rl"]!["steps_beta"]!);
        var resumed = JsonSerializer.Deserialize<SweepGrid>(
            File.ReadAllText(Path.Combine(runDir, "grid.json")),
            Training.TrainOptions.Json
        )!;
        Assert.Equal(1.0, resumed.StepsBeta);
        Assert.Equal(3, new SweepGrid([0.3], [0]).RlSteps(3, 0.3)); // unscaled by default
        Assert.Equal(267, grid.RlSteps(80, 0.3)); // rounded
        Assert.Equal(1280, (grid with { StepsBeta = 0.25, StepsPower = 2 }).RlSteps(320, 0.125));
        Assert.Equal(80, (grid with { StepsBeta = 0.25, StepsPower = 2 }).RlSteps(320, 0.5));
    }

    [Fact]
    public void The_coin_null_runs_RL_from_the_same_SFT_policy_and_the_net_rise_is_the_paired_difference()
    {
        var root = TestData.TempDir();
        var cfg = ExperimentTests.Tiny with { Grpo = ExperimentTests.Tiny.Grpo with { LearningRate = 1e-3 } };
        var runDir = ExperimentRunner.NewRunDir(root, "sweep");
        var s = Sweep.Run(new ExperimentRunner(cfg, runDir, root), new SweepGrid([1.0], [0.35], Twin: false), _ => { });
        var p = s["points"]!.AsArray().Single()!;
        var nul = p["coin_null"]!;
        Assert.Equal(0, nul["predicted"]!.GetValue<double>());
        var measured = p["measured"]!["per_seed"]!.AsArray().Select(x => (double)x!).ToArray();
        var nulls = nul["measured"]!["per_seed"]!.AsArray().Select(x => (double)x!).ToArray();
        var net = p["measured_minus_null"]!["per_seed"]!.AsArray().Select(x => (double)x!).ToArray();
        for (int i = 0; i < net.Length; i++)
            Assert.Equal(measured[i] - nulls[i], net[i], 5);
        var coinDir = Path.Combine(runDir, "sweep", "f0.35", "seed-1000", "beta1", "2-rl-coin");
        var rewards = Training
            .MetricsLog.Read(Path.Combine(coinDir, "metrics.jsonl"))
            .Where(r => r["rewards/coin/mean"] is not null)
            .ToList();
        Assert.NotEmpty(rewards);
        // the null starts from the same SFT checkpoint as the real RL: the same held-out loss at its step 0
        var first = ExperimentRunner.EvalPoints(coinDir).First().Metrics["eval_sft_nll_per_response"];
        var real = ExperimentRunner.EvalPoints(Path.Combine(coinDir, "..", "2-rl")).First();
        Assert.Equal(real.Metrics["eval_sft_nll_per_response"], first, 9);
        Assert.Contains(s["statements"]!.AsArray(), st => st!.GetValue<string>().Contains("coin-reward null"));
        var html = File.ReadAllText(SweepReport.Write(runDir, s));
        Assert.Contains("The coin-reward null", html);
        Assert.Contains("measured − coin null", html);
    }
}
