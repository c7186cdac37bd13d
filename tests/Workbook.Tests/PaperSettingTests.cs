using System.Text.Json.Nodes;
using Workbook.Data;
using Workbook.Experiments;
using Workbook.Text;
using Workbook.Training;
using Workbook.Verifiers;

namespace Workbook.Tests;

/// <summary>Issue 12, the paper's setting: CoLA data (duplicates, eval files, the prompt), accuracy and MCC,
/// num_train_epochs, and train sft -> train grpo chaining.</summary>
public class PaperSettingTests
{
    static string ColaPath => Path.Combine(TestData.Shared, "datasets", "cola", "train.tsv");

    static string Write(string name, string content)
    {
        var p = Path.Combine(TestData.TempDir(), name);
        File.WriteAllText(p, content);
        return p;
    }

    [Fact]
    public void Cola_duplicates_merge_and_conflicting_labels_are_dropped_and_counted()
    {
        var rows = new List<ColaRow>
        {
            new("a", 1, "", "A."),
            new("a", 1, "", "A."),
            new("b", 0, "*", "B."),
            new("b", 1, "", "B."),
            new("c", 0, "*", "C."),
            new("d", 1, "", "D."),
            new("d", 1, "", "D."),
            new("d", 0, "*", "D."),
        };
        var (kept, n) = FileTasks.Deduplicate(rows);
        Assert.Equal(["A.", "C."], kept.Select(r => r.Sentence));
        Assert.Equal(new DuplicateCounts(8, 2, 1, 2, 5), n);

        // the real training file (counted independently with python: 8,532 distinct sentences, 19 repeated, 11 of them
        // with both labels on 22 rows)
        var (all, _) = Datasets.LoadCola(ColaPath);
        var (clean, c) = FileTasks.Deduplicate(all);
        Assert.Equal(new DuplicateCounts(8551, 8521, 8, 11, 22), c);
        Assert.Equal(clean.Count, clean.Select(r => r.Sentence).Distinct().Count());
        Assert.DoesNotContain(clean, r => r.Sentence == "John wrote books."); // one of the conflicting ones
    }

    [Fact]
    public void Cola_task_uses_every_row_with_train_size_0_instructs_the_format_and_logs_what_it_dropped()
    {
        var t = TaskRegistry.Create(
            $"cola:{ColaPath}",
            0,
            new TaskOptions
            {
                TrainSize = 0,
                EvalSize = 256,
                LooseFormatFraction = 0,
            }
        );
        Assert.Equal(8521 - 256, t.Train.Count);
        Assert.Equal(256, t.Eval.Count);
        Assert.Empty(t.Train.Select(e => e.PromptText).Intersect(t.Eval.Select(e => e.PromptText)));
        Assert.Contains(
            t.Notes,
            n => n.Contains("8 exact duplicate(s) merged") && n.Contains("11 sentence(s) with conflicting labels")
        );
        Assert.DoesNotContain(t.Notes, n => n.Contains("natural wording"));
        // strict-only experts: every expert response earns the strict reward; the prompt states the format
        Assert.All(
            t.Train.Concat(t.Eval),
            e => Assert.Equal(1.0, t.Reward.Score(e.PromptText, e.Expert, e.Reference).Reward)
        );
        Assert.All(t.Train, e => Assert.EndsWith(FileTasks.Instruction, e.PromptText));
        Assert.Single(t.Train[0].Prompt);

        var sys = TaskRegistry.Create(
            $"cola:{ColaPath}",
            0,
            new TaskOptions
            {
                TrainSize = 100,
                EvalSize = 16,
                FormatInstruction = "system",
            }
        );
        Assert.Equal(100, sys.Train.Count);
        Assert.Equal(["system", "user"], sys.Train[0].Prompt.Select(m => m.Role));
        Assert.Equal(FileTasks.Instruction, sys.Train[0].Prompt[0].Content);
        // the mixed form is an option, and the log says so
        double loose = sys.Train.Count(e => sys.Reward.Score("", e.Expert, e.Reference).Reward == 0) / 100.0;
        Assert.InRange(loose, 0.2, 0.5);
        Assert.Contains(sys.Notes, n => n.Contains("35% in natural wording"));
        Assert.Throws<WorkbookException>(() =>
            TaskRegistry.Create($"cola:{ColaPath}", 0, new TaskOptions { FormatInstruction = "assistant" })
        );
    }

    [Fact]
    public void Cola_eval_files_load_in_both_layouts_and_bad_ones_name_file_and_line()
    {
        var raw = Write(
            "in_domain_dev.tsv",
            "gj04\t1\t\tThe cat sleeps.\ngj04\t0\t*\tCat the sleeps.\ngj04\t0\t*\tCat the sleeps.\n"
        );
        var (r, c) = FileTasks.LoadColaEval(raw);
        Assert.Equal([1, 0], r.Select(x => x.Label));
        Assert.Equal(1, c.MergedRows);
        var glue = Write("dev.tsv", "sentence\tlabel\nThe dog runs.\t1\nRuns dog the.\t0\n");
        Assert.Equal(["The dog runs.", "Runs dog the."], FileTasks.LoadColaEval(glue).Rows.Select(x => x.Sentence));

        void Bad(string name, string content, params string[] expect)
        {
            var p = Write(name, content);
            var e = Assert.Throws<WorkbookException>(() => FileTasks.LoadColaEval(p));
            foreach (var x in expect)
                Assert.Contains(x, e.Message);
        }
        Bad("three.tsv", "\nid\tThe cat.\t1\n", "three.tsv:2", "unknown CoLA layout", "3 tab-separated");
        Bad("comma.csv", "sentence,label\nThe cat.,1\n", "comma.csv:1", "unknown CoLA layout");
        Bad("header.tsv", "sentence\tlabel\n", "header.tsv", "no rows");
        Bad("empty.tsv", "\n\n", "empty.tsv", "no rows");
        Bad("test.tsv", "index\tsentence\n0\tThe cat.\n", "test.tsv:1", "unlabelled");
        Bad("mixed.tsv", "gj04\t1\t\tFine.\nThe cat.\t7\n", "mixed.tsv:2", "label must be 0 or 1");
        Assert.Contains(
            "not found",
            Assert.Throws<WorkbookException>(() => FileTasks.LoadColaEval("/no/such.tsv")).Message
        );

        // task.eval_file: held-out data from the file, the whole training file for training
        var t = TaskRegistry.Create(
            $"cola:{ColaPath}",
            0,
            new TaskOptions
            {
                TrainSize = 0,
                EvalSize = 100,
                EvalFile = glue,
            }
        );
        Assert.Equal(8521, t.Train.Count);
        Assert.Equal(
            ["The dog runs.", "Runs dog the."],
            t.Eval.Select(e => e.Prompt[0].Content.Split('"')[1]).Order().Reverse()
        );
        Assert.Contains(t.Notes, n => n.Contains("dev.tsv") && n.Contains("0 of its sentences also occur"));
    }

    [Fact]
    public void Mcc_and_accuracy_match_closed_forms()
    {
        const string A = "acceptable",
            U = "unacceptable";
        static List<(string, string?)> Pairs(int tp, int fn, int fp, int tn) =>
            [
                .. Enumerable.Repeat((A, (string?)A), tp),
                .. Enumerable.Repeat((A, (string?)U), fn),
                .. Enumerable.Repeat((U, (string?)A), fp),
                .. Enumerable.Repeat((U, (string?)U), tn),
            ];
        // binary: MCC = (tp·tn − fp·fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn))
        var s = ClassificationMetrics.Score(Pairs(3, 1, 1, 2));
        Assert.Equal(5.0 / 7, s.Accuracy, 12);
        Assert.Equal((3.0 * 2 - 1 * 1) / Math.Sqrt(4 * 4 * 3 * 3), s.Mcc, 12);
        Assert.Equal(1.0, ClassificationMetrics.Score(Pairs(4, 0, 0, 3)).Mcc, 12);
        Assert.Equal(-1.0, ClassificationMetrics.Score(Pairs(0, 4, 3, 0)).Mcc, 12);
        Assert.Equal(0.0, ClassificationMetrics.Score(Pairs(5, 0, 4, 0)).Mcc); // a constant predictor
        var rng = new Random(5);
        for (int i = 0; i < 200; i++)
        {
            int tp = rng.Next(8),
                fn = rng.Next(8),
                fp = rng.Next(8),
                tn = rng.Next(8);
            double den = Math.Sqrt((double)(tp + fp) * (tp + fn) * (tn + fp) * (tn + fn));
            double expect = den == 0 ? 0 : (tp * tn - fp * fn) / den;
            if (tp + fn + fp + tn > 0)
                Assert.Equal(expect, ClassificationMetrics.Score(Pairs(tp, fn, fp, tn)).Mcc, 12);
        }
        // an unparsed completion is its own class "none": s=4, c=2, p=(2,1,1), t=(2,2,0): (2·4 − 6)/sqrt((16−6)(16−8))
        var none = ClassificationMetrics.Score([(A, A), (A, null), (U, U), (U, A)]);
        Assert.Equal(2 / Math.Sqrt(80), none.Mcc, 12);
        Assert.Equal(0.5, none.Accuracy, 12);
        Assert.Equal(1, none.Unparsed);

        // the evaluator's hook: strict accuracy is the mean strict reward; the lenient parse reads the last label
        (string, string)[] rows =
        [
            ("Answer: acceptable", "1"),
            ("It is acceptable.", "acceptable"),
            ("Answer: acceptable", "0"),
            ("not acceptable... unacceptable", "unacceptable"),
            ("Answer: unacceptable", "bogus"),
        ];
        var m = ClassificationMetrics.LabelMetrics(rows);
        var strict = new LabelVerifier(true);
        Assert.Equal(
            rows.Take(4).Average(x => strict.Score("", x.Item1, x.Item2).Reward!.Value),
            m["eval_accuracy/strict"],
            12
        );
        Assert.Equal(0.75, m["eval_accuracy/lenient"], 12);
        // lenient: gold (A, A, U, U), predicted (A, A, A, U): tp 2, fn 0, fp 1, tn 1
        Assert.Equal((2.0 * 1 - 1 * 0) / Math.Sqrt(3 * 2 * 1 * 2), m["eval_mcc/lenient"], 12);
    }

    [Fact]
    public void Run_all_on_real_cola_with_the_small_model_defaults_to_both_orders_and_the_strict_only_form()
    {
        var cola = ExperimentConfig.Load(null, ["dataset=\"cola:train.tsv\""]);
        Assert.True(cola.ColaOnSmallModel);
        Assert.Equal(["sft-then-rl", "rl-then-sft", "no-format-mix"], ExperimentConfig.Resolve("all", null, cola));
        // --pipelines still picks, and all is every pipeline
        Assert.Equal(ExperimentConfig.Known, ExperimentConfig.Resolve("all", "all", cola));
        Assert.Equal(["coin-reward"], ExperimentConfig.Resolve("all", "coin-reward", cola));
        // the embedded task, and the paper's model (--model), keep the whole default set
        var grammar = ExperimentConfig.Resolve("all", null, ExperimentConfig.Load(null, []));
        Assert.Equal(ExperimentConfig.Resolve("all"), grammar);
        Assert.Contains("coin-reward", grammar);
        Assert.Contains("guarded", grammar);
        var paper = cola with { Model = "Qwen3-0.6B" };
        Assert.False(paper.ColaOnSmallModel);
        Assert.Equal(grammar, ExperimentConfig.Resolve("all", null, paper));
        // neither is a config key: config.json holds the settings, not what follows from them
        Assert.DoesNotContain("default_set", cola.ToJson());
        Assert.DoesNotContain("cola_on_small_model", cola.ToJson());
        // a resumed `run all` finishes the set its first session started (seeds.json), not today's default
        var dir = TestData.TempDir();
        var seeds = Path.Combine(dir, "seeds.json");
        File.WriteAllText(seeds, "{\"pipelines\": [\"sft-then-rl\", \"coin-reward\"]}");
        Assert.Equal(["sft-then-rl", "coin-reward"], Workbook.Cli.RunCommand.StartedPipelines(dir));
        File.WriteAllText(seeds, "{\"pipelines\": [\"sft-then-rl\", \"mystery\"]}");
        var e = Assert.Throws<WorkbookException>(() => Workbook.Cli.RunCommand.StartedPipelines(dir));
        Assert.Contains("mystery", e.Message);
    }

    [Fact]
    public void Num_train_epochs_resolves_to_steps_and_conflicts_with_max_steps()
    {
        var sft = TrainOptions.Load<SftOptions>(
            null,
            ["num_train_epochs=2", "per_device_train_batch_size=8", "gradient_accumulation_steps=2"]
        );
        Assert.Equal(0, sft.MaxSteps);
        Assert.Equal(14, sft.WithSteps(100).MaxSteps); // ceil(100 / 16) = 7 per epoch
        Assert.Null(sft.WithSteps(100).NumTrainEpochs);
        Assert.Equal(4, (sft with { NumTrainEpochs = 0.5 }).WithSteps(100).MaxSteps); // ceil(3.5)
        var grpo = TrainOptions.Load<GrpoOptions>(
            null,
            ["num_train_epochs=2", "per_device_train_batch_size=64", "num_generations=8"]
        );
        Assert.Equal(26, grpo.WithSteps(100).MaxSteps); // 8 prompts per step: ceil(100 / 8) = 13 per epoch
        Assert.Equal(100, new SftOptions().WithSteps(7).MaxSteps); // no epochs: unchanged

        var e = Assert.Throws<WorkbookException>(() =>
            TrainOptions.Load<SftOptions>(null, ["num_train_epochs=2", "max_steps=10"])
        );
        Assert.Contains("not both", e.Message);
        // max_steps 100 and epochs
        Assert.Throws<WorkbookException>(() => new SftOptions { NumTrainEpochs = 1 }.Validate());
        Assert.Throws<WorkbookException>(() => TrainOptions.Load<SftOptions>(null, ["num_train_epochs=0"]));
        var cfg = ExperimentConfig.Load(null, ["sft.num_train_epochs=2", "grpo.num_train_epochs=1"]);
        Assert.Equal(0, cfg.Sft.MaxSteps);
        Assert.Equal(240, ExperimentConfig.Load(null, []).Sft.MaxSteps);
        var e2 = Assert.Throws<WorkbookException>(() =>
            ExperimentConfig.Load(null, ["sft.num_train_epochs=2", "sft.max_steps=5"])
        );
        Assert.Contains("sft.max_steps or sft.num_train_epochs", e2.Message);
        // a written config (unresolved) loads again
        var path = Path.Combine(TestData.TempDir(), "config.json");
        File.WriteAllText(path, cfg.ToJson());
        Assert.Equal(2.0, ExperimentConfig.Load(path).Sft.NumTrainEpochs);

        var task = TaskRegistry.Create("grammar", 1, new TaskOptions { TrainSize = 200, EvalSize = 8 });
        var (r, notes) = EpochResolution.Resolve(cfg, task);
        Assert.Equal(2 * (int)Math.Ceiling(200 / 32.0), r.Sft.MaxSteps);
        Assert.Equal((int)Math.Ceiling(200 / 8.0), r.Grpo.MaxSteps); // 64 completions / 8 = 8 prompts per step
        Assert.Equal(2, notes.Count);
    }

    [Fact]
    public void An_sft_run_by_epochs_makes_exactly_that_many_passes()
    {
        var tok = Qwen3Tokenizer.Load(Path.Combine(TestData.Golden, "tiny-qwen3-bf16"));
        var task = TaskRegistry.Create("grammar", 1, new TaskOptions { TrainSize = 40, EvalSize = 4 });
        var codec = new Codec(tok, TaskVocabulary.Build(tok, task));
        var opt = TrainOptions
            .Load<SftOptions>(null, ["num_train_epochs=1.5", "per_device_train_batch_size=8", "learning_rate=1e-3"])
            .WithSteps(task.Train.Count);
        Assert.Equal(8, opt.MaxSteps); // 5 per epoch, 7.5 -> 8
        using var model = new Workbook.Model.Qwen3ForCausalLM(
            Workbook.Model.Qwen3Config.Tiny(codec.Vocab.Size),
            TorchSharp.torch.ScalarType.Float32,
            TorchSharp.torch.CPU,
            1
        );
        var dir = TestData.TempDir();
        new SftTrainer(model, codec, task.Train, opt, dir).Train();
        var lines = MetricsLog.Read(Path.Combine(dir, "metrics.jsonl")).Where(o => o.ContainsKey("loss")).ToList();
        Assert.Equal(8, lines.Count);
        Assert.Equal(1.6, lines[^1]["epoch"]!.GetValue<double>(), 9); // 64 sequences of 40
    }

    static (int Code, string Out, string Err) RunCli(params string[] args) =>
        CliProcess.Run(args, new Dictionary<string, string?> { ["COLUMNS"] = "300" }, 300_000);

    [Fact]
    public void Train_sft_then_train_grpo_from_its_checkpoint_chains_and_score_shows_token_text()
    {
        var root = TestData.TempDir();
        string a = Path.Combine(root, "sft"),
            b = Path.Combine(root, "grpo");
        var r1 = RunCli(
            "train",
            "sft",
            "--preset",
            "tiny",
            "--train-size",
            "64",
            "--run-dir",
            a,
            "--set",
            "max_steps=2",
            "--set",
            "per_device_train_batch_size=4"
        );
        Assert.True(r1.Code == 0, r1.Out + r1.Err);
        var ckpt = TrainerCheckpoint.Latest(a)!;
        Assert.True(File.Exists(Path.Combine(ckpt, "vocab.json")), "the checkpoint carries its vocabulary");
        var r2 = RunCli(
            "train",
            "grpo",
            "--model",
            ckpt,
            "--train-size",
            "64",
            "--run-dir",
            b,
            "--set",
            "max_steps=1",
            "--set",
            "per_device_train_batch_size=4",
            "--set",
            "num_generations=2",
            "--set",
            "max_completion_length=4"
        );
        Assert.True(r2.Code == 0, r2.Out + r2.Err);
        Assert.NotNull(TrainerCheckpoint.Latest(b));

        var r3 = RunCli("score", "--model", ckpt, "--text", "Answer: acceptable", "--top", "2", "--json");
        Assert.True(r3.Code == 0, r3.Out + r3.Err);
        var j = JsonNode.Parse(r3.Out)!;
        Assert.Equal(
            ["\"Answer\"", "\":\"", "\" acceptable\""],
            j["positions"]!.AsArray().Select(p => p!["token"]!.GetValue<string>())
        );
        Assert.Equal(3, j["positions"]![0]!["top"]![0]!.AsArray().Count); // id, logit, text

        // without its vocab.json the compact model is refused with a clear error (exit 2)
        var bare = Path.Combine(root, "bare");
        Directory.CreateDirectory(bare);
        foreach (var f in new[] { "config.json", "model.safetensors" })
            File.Copy(Path.Combine(ckpt, f), Path.Combine(bare, f));
        var r4 = RunCli(
            "train",
            "grpo",
            "--model",
            bare,
            "--train-size",
            "64",
            "--run-dir",
            Path.Combine(root, "c"),
            "--set",
            "max_steps=1"
        );
        Assert.Equal(2, r4.Code);
        Assert.Contains("vocab.json", r4.Out + r4.Err);
    }
}
