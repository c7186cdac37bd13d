using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Workbook.Data;
using Workbook.Experiments;
using Workbook.Training;
using Workbook.Verifiers;

namespace Workbook.Tests;

/// <summary>Issue 12, beyond one machine: report --from-trl on fixture trainer_state.json files in TRL's format,
/// export-recipe --engine trl (compiles, documented option names only, the same data and verifiers), and the paper
/// recipe end to end on the tiny Hugging Face checkpoint.</summary>
public class TrlInteropTests
{
    static string Fixtures => Path.Combine(TestData.RepoRoot, "tests", "Workbook.Tests", "Fixtures", "trl-runs");
    static string ColaPath => Path.Combine(TestData.Shared, "datasets", "cola", "train.tsv");
    static string PaperConfig => Path.Combine(TestData.RepoRoot, "configs", "paper-cola-qwen3-0.6b.json");
    static string Cli => Path.Combine(AppContext.BaseDirectory, "workbook.dll");

    static (int Code, string Out) Run(string file, params string[] args)
    {
        var psi = new ProcessStartInfo(file, args) { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.Environment["COLUMNS"] = "300";
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var o = p.StandardOutput.ReadToEnd();
        Assert.True(p.WaitForExit(600_000), $"{file} did not finish");
        return (p.ExitCode, o + err.Result);
    }

    static (int Code, string Out) Wb(params string[] args) => Run("dotnet", [Cli, .. args]);

    [Fact]
    public void Trl_logs_load_in_the_documented_layout_and_give_the_changes_by_hand()
    {
        var ps = TrlImport.Load(Fixtures);
        Assert.Equal(["rl-then-sft", "sft-then-rl"], ps.Select(p => p.Name));
        var s2r = ps[1];
        Assert.Equal(2, s2r.Seeds.Count);
        Assert.Equal(["sft", "grpo"], s2r.Seeds[0].Stages.Select(s => s.Kind));
        // the last checkpoint
        Assert.EndsWith(Path.Combine("checkpoint-4", "trainer_state.json"), s2r.Seeds[0].Stages[1].Source);
        Assert.Equal(10, s2r.Seeds[0].Stages[0].Steps);

        var f = TrlImport.Findings(ps);
        var loss = f.Single(x => x.Pipeline == "sft-then-rl" && x.Quantity.StartsWith("Δ SFT loss")).Stat;
        Assert.Equal([0.15, 0.12], loss.PerSeed.Select(x => Math.Round(x, 12))); // 0.45 − 0.30 and 0.40 − 0.28
        double h = 12.706 * (0.03 / Math.Sqrt(2)) / Math.Sqrt(2); // t_{0.975,1} · sd / √n
        Assert.Equal(0.135 - h, loss.Ci95[0], 9);
        Assert.Contains("not shown", f.Single(x => x.Pipeline == "sft-then-rl" && x.Statement.Length > 0).Statement);
        Assert.Equal(0.3, f.Single(x => x.Quantity.StartsWith("Δ strict reward during GRPO")).Stat.Mean, 12);
        // rl-then-sft: no step-0 evaluation in the SFT stage: the start is GRPO's last value (0.7 strict, 0.9 lenient);
        // its TRL-native eval_loss and underscore reward names are read too
        var r2s = f.Where(x => x.Pipeline == "rl-then-sft").ToList();
        Assert.Equal(-0.3, r2s.Single(x => x.Quantity.StartsWith("Δ strict")).Stat.Mean, 12);
        Assert.Equal(-0.05, r2s.Single(x => x.Quantity.StartsWith("Δ lenient")).Stat.Mean, 12);
        Assert.Contains("the strict reward fell (one seed", r2s.Single(x => x.Statement.Length > 0).Statement);
        Assert.Equal(
            [0.6, 0.35],
            ps[0]
                .Seeds[0]
                .Stages[1]
                .Points.Where(p => p.Metrics.ContainsKey(TrlImport.SftLoss))
                .Select(p => p.Metrics[TrlImport.SftLoss])
        );
    }

    [Fact]
    public void Report_from_trl_renders_the_coupling_report_and_bad_folders_are_clear_errors()
    {
        var html = Path.Combine(TestData.TempDir(), "coupling.html");
        var r = Wb("report", "--from-trl", Fixtures, "--out", html);
        Assert.True(r.Code == 0, r.Out);
        Assert.Contains("during GRPO after SFT", r.Out);
        var text = File.ReadAllText(html);
        int inLibrary = Regex.Matches(Workbook.Charts.CurveCharts.PlotlyJs(), "Plotly.newPlot").Count;
        // 2 pipelines x (loss, reward, training reward)
        Assert.Equal(6, Regex.Matches(text, "Plotly.newPlot").Count - inLibrary);
        Assert.DoesNotMatch("<script[^>]+src=\"https?://", text);
        ChromiumRender.AssertChartsRender(html, minCharts: 6);

        var root = TestData.TempDir();
        Assert.Contains("no TRL stage folders", Assert.Throws<WorkbookException>(() => TrlImport.Load(root)).Message);
        Directory.CreateDirectory(Path.Combine(root, "1-sft"));
        File.WriteAllText(Path.Combine(root, "1-sft", "trainer_state.json"), "{\"global_step\": 3}");
        var e = Assert.Throws<WorkbookException>(() => TrlImport.Load(root));
        Assert.Contains("1-sft", e.Message);
        Assert.Contains("no log_history", e.Message);
        Directory.CreateDirectory(Path.Combine(root, "2-grpo"));
        Assert.Contains(
            "no trainer_state.json",
            Assert.Throws<WorkbookException>(() => TrlImport.LoadStage(Path.Combine(root, "2-grpo"))).Message
        );
        var missing = Wb("report", "--from-trl", Path.Combine(root, "nope"));
        Assert.Equal(2, missing.Code);
    }

    // Documented option names, from TRL's docs (huggingface/trl trl/trainer/sft_config.py and grpo_config.py
    // docstrings, rendered at huggingface.co/docs/trl/sft_trainer and grpo_trainer) and the transformers
    // TrainingArguments both inherit. Only names the recipe may write are listed; check a new key against the docs.
    static readonly string[] TrainingArguments =
    [
        "output_dir",
        "seed",
        "learning_rate",
        "num_train_epochs",
        "max_steps",
        "warmup_ratio",
        "lr_scheduler_type",
        "weight_decay",
        "adam_beta1",
        "adam_beta2",
        "adam_epsilon",
        "max_grad_norm",
        "logging_steps",
        "save_steps",
        "save_total_limit",
        "bf16",
        "report_to",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
    ];
    static readonly string[] SftConfigOnly =
    [
        "max_length",
        "completion_only_loss",
        "assistant_only_loss",
        "packing",
        "packing_strategy",
        "padding_free",
        "dataset_text_field",
        "loss_type",
        "shuffle_dataset",
        "eos_token",
    ];
    static readonly string[] GrpoConfigOnly =
    [
        "num_generations",
        "max_completion_length",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "repetition_penalty",
        "beta",
        "epsilon",
        "epsilon_high",
        "delta",
        "num_iterations",
        "scale_rewards",
        "loss_type",
        "mask_truncated_completions",
        "importance_sampling_level",
        "reward_weights",
        "chat_template_kwargs",
        "generation_batch_size",
        "steps_per_generation",
        "num_generations_eval",
        "top_entropy_quantile",
        "log_completions",
    ];

    static List<string> DictKeys(string script, string name)
    {
        var m = Regex.Match(script, $@"^{name} = dict\(\n(.*?)^\)", RegexOptions.Multiline | RegexOptions.Singleline);
        Assert.True(m.Success, $"{name} block not found");
        return Regex
            .Matches(m.Groups[1].Value, @"^    (\w+)=", RegexOptions.Multiline)
            .Select(x => x.Groups[1].Value)
            .ToList();
    }

    [Fact]
    public void Export_recipe_writes_a_compiling_script_with_documented_trl_options_and_the_same_data_and_verifiers()
    {
        var dir = TestData.TempDir();
        var py = Path.Combine(dir, "recipe.py");
        var r = Wb("export-recipe", "--engine", "trl", py, "--config", PaperConfig, "--dataset", $"cola:{ColaPath}");
        Assert.True(r.Code == 0, r.Out);
        var c = Run("python3", "-m", "py_compile", py);
        Assert.True(c.Code == 0, c.Out);
        var script = File.ReadAllText(py);

        var sft = DictKeys(script, "SFT_ARGS");
        var grpo = DictKeys(script, "GRPO_ARGS");
        Assert.All(
            sft,
            k =>
                Assert.True(
                    TrainingArguments.Contains(k) || SftConfigOnly.Contains(k),
                    $"SFTConfig has no documented option '{k}'"
                )
        );
        Assert.All(
            grpo,
            k =>
                Assert.True(
                    TrainingArguments.Contains(k) || GrpoConfigOnly.Contains(k),
                    $"GRPOConfig has no documented option '{k}'"
                )
        );
        foreach (
            var m in Regex.Matches(script, @"(SFTConfig|GRPOConfig)\(([^)]*)\)").Where(m => !m.Value.Contains("import"))
        )
        foreach (Match k in Regex.Matches(m.Groups[2].Value, @"(\w+)="))
            Assert.Contains(k.Groups[1].Value, TrainingArguments);
        // the paper recipe's values arrive under TRL's names
        Assert.Contains("    num_train_epochs=2.0,\n", script);
        Assert.Contains("    beta=0.04,\n", script);
        Assert.Contains("    num_generations=8,\n", script);
        Assert.Contains("LOOSE_FORMAT_FRACTION = 0.0\n", script);

        // the same data and verifiers: the script's own functions (no torch needed) against the C# ones
        string[] completions =
        [
            "Answer: acceptable",
            "I think so.\nAnswer: unacceptable\n",
            "answer: acceptable",
            "Answer: acceptable.",
            "It is unacceptable, not acceptable",
            "The sentence is acceptable.",
            "",
            "Answer:  acceptable",
            "Answer: unacceptable \n\n",
            "UNACCEPTABLE",
        ];
        string[] refs =
        [
            "acceptable",
            "unacceptable",
            "acceptable",
            "acceptable",
            "acceptable",
            "acceptable",
            "acceptable",
            "acceptable",
            "unacceptable",
            "unacceptable",
        ];
        var probe = Path.Combine(dir, "probe.py");
        File.WriteAllText(
            probe,
            "import json, runpy, sys\nm = runpy.run_path(sys.argv[1])\nc, r = json.loads(sys.argv[2]), "
                + "json.loads(sys.argv[3])\ntrain, held = m['build_rows']()\nprint(json.dumps({'strict': "
                + "m['cola_strict'](c, r), 'lenient': m['cola_lenient'](c, r),\n 'rows': "
                + "len(m['load_cola'](m['TRAIN_FILE'])), 'train': len(train), 'held': len(held), 'prompt': "
                + "held[0]['prompt'],\n 'experts': sorted({x['completion'][0]['content'] for x in train})}))\n"
        );
        var o = Run("python3", probe, py, JsonSerializer.Serialize(completions), JsonSerializer.Serialize(refs));
        Assert.True(o.Code == 0, o.Out);
        var j = JsonNode.Parse(o.Out)!;
        var (strict, lenient) = (new LabelVerifier(true), new LabelVerifier(false));
        Assert.Equal(
            completions.Select((x, i) => strict.Score("", x, refs[i]).Reward!.Value),
            j["strict"]!.AsArray().Select(x => x!.GetValue<double>())
        );
        Assert.Equal(
            completions.Select((x, i) => lenient.Score("", x, refs[i]).Reward!.Value),
            j["lenient"]!.AsArray().Select(x => x!.GetValue<double>())
        );
        var task = TaskRegistry.Create(
            $"cola:{ColaPath}",
            0,
            new TaskOptions
            {
                TrainSize = 0,
                EvalSize = 256,
                LooseFormatFraction = 0,
            }
        );
        Assert.Equal(8521, j["rows"]!.GetValue<int>());
        Assert.Equal(task.Train.Count, j["train"]!.GetValue<int>());
        Assert.Equal(task.Eval.Count, j["held"]!.GetValue<int>());
        Assert.Equal(
            ["Answer: acceptable", "Answer: unacceptable"],
            j["experts"]!.AsArray().Select(x => x!.GetValue<string>())
        );
        var pm = j["prompt"]!.AsArray();
        Assert.Single(pm);
        Assert.EndsWith("\n" + FileTasks.Instruction, pm[0]!["content"]!.GetValue<string>());

        var again = Wb(
            "export-recipe",
            "--engine",
            "trl",
            py,
            "--config",
            PaperConfig,
            "--dataset",
            $"cola:{ColaPath}"
        );
        Assert.Equal(2, again.Code);
        Assert.Contains("never overwrites", again.Out);
        Assert.Equal(2, Wb("export-recipe", "--engine", "trl", Path.Combine(dir, "g.py"), "--dataset", "grammar").Code);
    }

    [Fact]
    public void The_paper_recipe_runs_end_to_end_on_the_tiny_hugging_face_checkpoint()
    {
        var root = TestData.TempDir();
        var model = Path.Combine(TestData.Golden, "tiny-qwen3-bf16");
        // one pipeline: `run all` is the same code four times and took 6 min here (the 151,936-wide lm_head dominates)
        var r = Wb(
            "run",
            "sft-then-rl",
            "--config",
            PaperConfig,
            "--model",
            model,
            "--dataset",
            $"cola:{ColaPath}",
            "--runs",
            root,
            // the recipe with CPU-sized budgets: f32 (bf16 has no fast CPU path: ~200 s per SFT step here), 8 rows
            "--seeds",
            "1",
            "--set",
            "dtype=f32",
            "--set",
            "task.train_size=8",
            "--set",
            "task.eval_size=4",
            "--set",
            "sft.per_device_train_batch_size=8",
            "--set",
            "grpo.per_device_train_batch_size=8",
            "--set",
            "grpo.num_generations=4",
            "--set",
            "grpo.num_train_epochs=0.5",
            "--set",
            "grpo.max_completion_length=8",
            "--set",
            "evals_per_stage=1",
            "--set",
            "c1_samples=16",
            "--set",
            "interleave_rounds=2"
        );
        Assert.True(r.Code == 0, r.Out);
        Assert.Contains("11 sentence(s) with conflicting labels dropped", r.Out); // the data notes reach the run log
        Assert.Contains("sft.num_train_epochs 2 over 8 examples, 8 per step: max_steps 2", r.Out);
        var run = Directory.GetDirectories(root).Single(d => !Path.GetFileName(d).StartsWith('.'));
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(run, "config.json")))!;
        Assert.Equal(2, cfg["sft"]!["max_steps"]!.GetValue<int>()); // 2 epochs of 8 rows at 8 per step
        Assert.Equal(2, cfg["grpo"]!["max_steps"]!.GetValue<int>()); // 0.5 epochs of 8 prompts at 2 per step
        Assert.Null(cfg["sft"]!["num_train_epochs"]);
        Assert.Equal(0.0, cfg["task"]!["loose_format_fraction"]!.GetValue<double>());
        Assert.Equal(1e-6, cfg["grpo"]!["learning_rate"]!.GetValue<double>()); // the recipe's values arrive
        var summary = JsonNode.Parse(File.ReadAllText(Path.Combine(run, "summary.json")))!;
        Assert.Equal(["sft-then-rl"], summary["pipelines"]!.AsObject().Select(p => p.Key));
        Assert.NotNull(summary["pipelines"]!["sft-then-rl"]!["sft_loss_change_during_rl"]!["mean"]);
        Assert.True(File.Exists(Path.Combine(run, "report.html")));
        var evals = MetricsLog
            .Read(Path.Combine(run, "sft-then-rl", "seed-1000", "2-rl", "metrics.jsonl"))
            .Where(o => o.ContainsKey("eval_sft_loss"))
            .ToList();
        Assert.NotEmpty(evals);
        Assert.All(evals, o => Assert.True(o.ContainsKey("eval_mcc/lenient") && o.ContainsKey("eval_accuracy/strict")));
        Assert.Equal(
            evals[0]["eval_rewards/cola-strict/mean"]!.GetValue<double>(),
            evals[0]["eval_accuracy/strict"]!.GetValue<double>(),
            12
        );
    }
}
