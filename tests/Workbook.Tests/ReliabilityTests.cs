using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using Workbook.Cli;
using Workbook.Data;
using Workbook.Experiments;
using Workbook.Model;
using Workbook.Reports;
using Workbook.Training;

namespace Workbook.Tests;

/// <summary>Issue 15 (reliability) and the CLI messages of issue 10: every bad input is one clear line, concurrent runs
/// never share a folder, nothing grows without bound.</summary>
public class ReliabilityTests
{
    static string Cli => Path.Combine(AppContext.BaseDirectory, "workbook.dll");

    /// <summary>Runs the CLI to completion with stdout and stderr redirected (so: plain, non-terminal
    /// output).</summary>
    static (int Code, string Out, string Err) Run(params string[] args) => RunIn(null, args);

    static (int Code, string Out, string Err) RunIn(string? cwd, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet", [Cli, .. args])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        if (cwd is not null)
            psi.WorkingDirectory = cwd;
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var outp = p.StandardOutput.ReadToEnd();
        Assert.True(p.WaitForExit(600_000), "the CLI did not finish");
        return (p.ExitCode, outp, err.Result);
    }

    /// <summary>A user error: exit 2, one line "error: ..." on stderr naming the problem, no stack trace, stdout
    /// clean.</summary>
    static string UserError((int Code, string Out, string Err) r, string expect)
    {
        Assert.True(r.Code == 2, $"exit {r.Code}; stderr: {r.Err}");
        var lines = r.Err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, $"expected one error line, got:\n{r.Err}");
        Assert.StartsWith("error: ", lines[0]);
        Assert.Contains(expect, lines[0]);
        Assert.DoesNotContain("   at ", r.Err);
        Assert.False((r.Err + r.Out).Contains('\x1b'), $"escape codes in the output:\n{r.Out}\n{r.Err}");
        return lines[0];
    }

    static readonly string[] Tiny =
    [
        "--seeds",
        "1",
        "--set",
        "base.max_steps=2",
        "--set",
        "sft.max_steps=2",
        "--set",
        "grpo.max_steps=1",
        "--set",
        "base.per_device_train_batch_size=4",
        "--set",
        "sft.per_device_train_batch_size=4",
        "--set",
        "grpo.per_device_train_batch_size=4",
        "--set",
        "grpo.num_generations=2",
        "--set",
        "grpo.max_completion_length=6",
        "--set",
        "task.train_size=32",
        "--set",
        "task.eval_size=4",
        "--set",
        "c1_samples=0",
        "--set",
        "evals_per_stage=1",
        "--set",
        "interleave_rounds=1",
    ];

    // ---- must fix 1: concurrent runs ------------------------------------------------------------------------------

    [Fact]
    public void Concurrent_runs_into_one_runs_folder_get_separate_complete_folders()
    {
        var runs = TestData.TempDir();
        var psis = Enumerable
            .Range(0, 3)
            .Select(_ => new ProcessStartInfo("dotnet", [Cli, "run", "sft-then-rl", "--quick", "--runs", runs, .. Tiny])
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            })
            .ToList();
        var procs = psis.Select(p => Process.Start(p)!).ToList(); // started together: same second, same name
        var errs = procs.Select(p => p.StandardError.ReadToEndAsync()).ToList();
        var outs = procs.Select(p => p.StandardOutput.ReadToEndAsync()).ToList();
        foreach (var (p, i) in procs.Select((p, i) => (p, i)))
        {
            Assert.True(p.WaitForExit(900_000));
            Assert.True(p.ExitCode == 0, $"process {i} exit {p.ExitCode}: {errs[i].Result}");
        }
        var dirs = Directory.GetDirectories(runs).Where(d => !Path.GetFileName(d).StartsWith('.')).ToList();
        Assert.Equal(3, dirs.Count);
        Assert.Equal(
            3,
            outs.Select(o => o.Result.Split('\n').First(l => l.StartsWith("run folder:"))).Distinct().Count()
        );
        foreach (var d in dirs)
        {
            Assert.True(File.Exists(Path.Combine(d, "summary.json")), $"{d} has no summary.json");
            foreach (var stage in new[] { "1-sft", "2-rl" })
            {
                var rows = MetricsLog.Read(Path.Combine(d, "sft-then-rl", "seed-1000", stage, "metrics.jsonl"));
                var trainSteps = rows.Where(r => !r.Any(kv => kv.Key.StartsWith("eval_")))
                    .Select(r => (long)r["step"]!)
                    .ToList();
                // exactly this run's steps, once each: no rows from another process
                Assert.Equal(Enumerable.Range(1, stage == "1-sft" ? 2 : 1).Select(i => (long)i), trainSteps);
            }
        }
    }

    [Fact]
    public void RunFolders_Claim_never_returns_the_same_folder_twice()
    {
        var runs = TestData.TempDir();
        var claimed = new System.Collections.Concurrent.ConcurrentBag<string>();
        Parallel.For(0, 16, _ => claimed.Add(RunFolders.Claim(runs, "x")));
        Assert.Equal(16, claimed.Distinct().Count());
        Assert.All(claimed, d => Assert.True(Directory.Exists(d)));
    }

    [Fact]
    public void A_full_disk_is_one_line_on_stderr_and_exit_2()
    {
        // /dev/full fails every write with ENOSPC: the real exception a full disk raises
        var full = Assert.ThrowsAny<IOException>(() =>
        {
            using var f = new FileStream("/dev/full", FileMode.Open, FileAccess.Write);
            f.Write(new byte[1 << 16]);
            f.Flush();
        });
        var err = new StringWriter();
        var before = Console.Error;
        Console.SetError(err);
        try
        {
            Assert.Equal(2, Terminal.Report(full));
        }
        finally
        {
            Console.SetError(before);
        }
        var lines = err.ToString().Trim().Split('\n');
        Assert.Single(lines);
        Assert.StartsWith("error: ", lines[0]);
        Assert.DoesNotContain(" at ", lines[0]);
    }

    [Fact]
    public void Runs_on_a_file_is_one_clear_error()
    {
        var file = Path.Combine(TestData.TempDir(), "afile");
        File.WriteAllText(file, "x");
        var e = Assert.Throws<WorkbookException>(() => RunFolders.Claim(file, "x"));
        Assert.Contains("--runs", e.Message);
    }

    // ---- must fix 2: oversized values fail fast --------------------------------------------------------------------

    [Fact]
    public void A_config_with_more_layers_than_its_checkpoint_is_refused_before_allocating()
    {
        var dir = TestData.TempDir();
        using (var m = new Qwen3ForCausalLM(Qwen3Config.Preset("tiny"), TorchSharp.torch.ScalarType.Float32, null, 1))
            Checkpoint.Save(m, dir);
        var cfg = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "config.json")))!.AsObject();
        cfg["num_hidden_layers"] = 20000; // 20000 layers of the tiny shape: about 1 GB if it were allocated
        File.WriteAllText(Path.Combine(dir, "config.json"), cfg.ToJsonString());
        var e = Assert.Throws<WorkbookException>(() => Checkpoint.Load(dir));
        Assert.Contains("missing tensor 'model.layers.2.", e.Message);
        Assert.Contains("and ", e.Message); // the list is capped
    }

    [Theory]
    [InlineData(true, false)]
    [InlineData(false, true)]
    public void The_shapes_a_config_describes_are_those_of_the_built_model(bool tied, bool bias)
    {
        var c = Qwen3Config.Preset("tiny") with { TieWordEmbeddings = tied, AttentionBias = bias };
        using var m = new Qwen3ForCausalLM(c, TorchSharp.torch.ScalarType.Float32, null, 1);
        var sd = m.state_dict();
        var expected = Checkpoint.ExpectedShapes(c);
        Assert.Equal(sd.Keys.Order(), expected.Keys.Order());
        foreach (var (k, v) in sd)
            Assert.Equal(v.shape, expected[k]);
    }

    [Fact]
    public void A_shape_that_cannot_fit_in_memory_is_refused_naming_the_fields()
    {
        var c = Qwen3Config.Preset("qwen3-0.6b") with { VocabSize = 2_000_000_000 };
        var e = Assert.Throws<WorkbookException>(() => c.Validate("config.json"));
        Assert.Contains("vocab_size", e.Message);
        Assert.Contains("GiB", e.Message);
    }

    [Fact]
    public void A_line_without_end_is_capped_not_read_forever()
    {
        var e = Assert.Throws<WorkbookException>(() => RowReader.Lines("/dev/zero", 1 << 20).First());
        Assert.Contains("/dev/zero:1: line longer than", e.Message);
    }

    [Fact]
    public void Verify_on_dev_zero_is_one_clear_error()
    {
        UserError(Run("verify", "--verifier", "cola-strict", "--input", "/dev/zero"), "line longer than");
    }

    // ---- must fix 3: stack traces become one line --------------------------------------------------------------

    [Fact]
    public void An_infinite_learning_rate_is_one_line_and_leaves_no_run_folder()
    {
        var runs = TestData.TempDir();
        UserError(
            Run("run", "sft-then-rl", "--quick", "--runs", runs, "--set", "sft.learning_rate=1e400"),
            "sft.learning_rate"
        );
        Assert.Empty(Directory.GetFileSystemEntries(runs));
    }

    [Fact]
    public void A_learning_rate_that_overflows_the_update_is_refused_before_training()
    {
        var runs = TestData.TempDir();
        UserError(
            Run(
                "train",
                "sft",
                "--preset",
                "tiny",
                "--train-size",
                "50",
                "--runs",
                runs,
                "--set",
                "learning_rate=3e38",
                "--set",
                "max_steps=2"
            ),
            "learning_rate"
        );
        Assert.Empty(Directory.GetFileSystemEntries(runs));
    }

    [Fact]
    public void Score_top_zero_and_an_endless_generation_are_clear_errors()
    {
        UserError(Run("score", "--preset", "tiny", "--ids", "1,2", "--top", "0"), "--top");
        UserError(
            Run("generate", "--preset", "tiny", "--ids", "1,2", "--max-new-tokens", "100000000", "--json"),
            "--max-new-tokens"
        );
    }

    [Fact]
    public void A_fractional_eos_token_id_and_a_non_positive_context_are_refused_naming_the_field()
    {
        var c = Qwen3Config.Preset("tiny");
        var eos = c with { EosTokenIdRaw = System.Text.Json.JsonDocument.Parse("1.5").RootElement };
        Assert.Contains("eos_token_id", Assert.Throws<WorkbookException>(() => eos.Validate("config.json")).Message);
        Assert.Contains(
            "max_position_embeddings",
            Assert
                .Throws<WorkbookException>(() => (c with { MaxPositionEmbeddings = 0 }).Validate("config.json"))
                .Message
        );
    }

    /// <summary>A safetensors header of one-dimensional F32 tensors: name, length and data offsets.</summary>
    static string F32Header(params (string Name, int Length, int Start, int End)[] tensors) =>
        "{"
        + string.Join(
            ",",
            tensors.Select(t =>
                $$"""
                    "{{t.Name}}":{"dtype":"F32","shape":[{{t.Length}}],"data_offsets":[{{t.Start}},{{t.End}}]}
                    """
            )
        )
        + "}";

    static string Safetensors(string header, int dataBytes)
    {
        var path = Path.Combine(TestData.TempDir(), "model.safetensors");
        var h = Encoding.UTF8.GetBytes(header);
        using var fs = File.Create(path);
        fs.Write(BitConverter.GetBytes((ulong)h.Length));
        fs.Write(h);
        fs.Write(new byte[dataBytes]);
        return path;
    }

    [Fact]
    public void Safetensors_with_a_duplicate_name_overlap_or_hole_is_refused()
    {
        var dup = Safetensors(F32Header(("a", 1, 0, 4), ("a", 1, 4, 8)), 8);
        Assert.Contains("twice", Assert.Throws<WorkbookException>(() => SafetensorsFile.Open(dup).Dispose()).Message);
        var overlap = Safetensors(F32Header(("a", 2, 0, 8), ("b", 1, 4, 8)), 8);
        Assert.Contains(
            "overlaps",
            Assert.Throws<WorkbookException>(() => SafetensorsFile.Open(overlap).Dispose()).Message
        );
        var hole = Safetensors(F32Header(("a", 1, 0, 4), ("b", 1, 8, 12)), 12);
        Assert.Contains("hole", Assert.Throws<WorkbookException>(() => SafetensorsFile.Open(hole).Dispose()).Message);
        var tail = Safetensors("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""", 12);
        Assert.Contains(
            "after the last tensor",
            Assert.Throws<WorkbookException>(() => SafetensorsFile.Open(tail).Dispose()).Message
        );
    }

    [Fact]
    public void A_header_length_of_two_to_the_64_minus_one_is_printed_as_itself()
    {
        var path = Path.Combine(TestData.TempDir(), "model.safetensors");
        File.WriteAllBytes(path, [.. BitConverter.GetBytes(ulong.MaxValue), .. new byte[16]]);
        Assert.Contains(
            "18446744073709551615",
            Assert.Throws<WorkbookException>(() => SafetensorsFile.Open(path).Dispose()).Message
        );
    }

    [Fact]
    public void A_half_written_last_metrics_line_is_ignored_and_a_bad_middle_line_named()
    {
        var dir = TestData.TempDir();
        var path = Path.Combine(dir, "metrics.jsonl");
        File.WriteAllText(path, "{\"step\":1,\"loss\":2}\n{\"step\":2,\"lo");
        Assert.Single(MetricsLog.Read(path));
        File.WriteAllText(path, "{\"step\":1,\"loss\":2}\n{\"step\":2,\"lo\n{\"step\":3}\n");
        Assert.Contains("metrics.jsonl:2", Assert.Throws<WorkbookException>(() => MetricsLog.Read(path)).Message);
    }

    // ---- must fix 4: --quick never overrides explicit options -------------------------------------------------

    [Fact]
    public void Quick_keeps_explicit_set_and_seeds()
    {
        var q = RunCommand.LoadConfig(null, true, []);
        Assert.Equal(80, q.Sft.MaxSteps);
        Assert.Equal(2, q.Seeds);
        var c = RunCommand.LoadConfig(null, true, ["sft.max_steps=10", "seeds=3"]);
        Assert.Equal(10, c.Sft.MaxSteps);
        Assert.Equal(3, c.Seeds);
        Assert.Equal(q.Grpo.MaxSteps, c.Grpo.MaxSteps); // the rest of --quick still applies
        var file = Path.Combine(TestData.TempDir(), "c.json");
        File.WriteAllText(file, """{"grpo": {"max_steps": 7}}""");
        Assert.Equal(7, RunCommand.LoadConfig(file, true, []).Grpo.MaxSteps); // a config file wins over --quick too
    }

    // ---- must fix 5: a resumed stage logs its evaluation once ---------------------------------------------------

    [Fact]
    public void Resuming_a_finished_training_run_does_not_log_its_evaluation_again()
    {
        var dir = Path.Combine(TestData.TempDir(), "t");
        string[] args =
        [
            "--preset",
            "tiny",
            "--train-size",
            "40",
            "--set",
            "max_steps=2",
            "--set",
            "per_device_train_batch_size=4",
        ];
        Assert.Equal(0, Run(["train", "sft", "--run-dir", dir, .. args]).Code);
        var before = MetricsLog.Read(Path.Combine(dir, "metrics.jsonl")).Count;
        var r = Run(["train", "sft", "--resume", dir, .. args]);
        Assert.True(r.Code == 0, r.Err);
        var rows = MetricsLog.Read(Path.Combine(dir, "metrics.jsonl"));
        Assert.Equal(before, rows.Count);
        Assert.Equal(2, rows.Count(o => o.ContainsKey("eval_sft_loss"))); // step 0 and step 2, once each
    }

    // ---- should fix -------------------------------------------------------------------------------------------

    [Fact]
    public void Train_resume_with_a_different_train_size_is_refused_before_anything_is_rewritten()
    {
        var dir = Path.Combine(TestData.TempDir(), "t");
        string[] args = ["--preset", "tiny", "--set", "max_steps=1", "--set", "per_device_train_batch_size=4"];
        Assert.Equal(0, Run(["train", "sft", "--run-dir", dir, "--train-size", "40", .. args]).Code);
        var options = File.ReadAllText(Path.Combine(dir, "options.json"));
        var stamp = File.GetLastWriteTimeUtc(Path.Combine(dir, "options.json"));
        UserError(Run(["train", "sft", "--resume", dir, "--train-size", "300", .. args]), "--train-size 40");
        UserError(Run(["train", "sft", "--resume", dir, "--dataset", "arithmetic", .. args]), "--dataset grammar");
        UserError(Run(["train", "sft", "--resume", dir, "--terse", .. args]), "--terse");
        UserError(Run(["train", "sft", "--resume", dir, "--preset", "small", "--set", "max_steps=1"]), "--preset tiny");
        Assert.Equal(stamp, File.GetLastWriteTimeUtc(Path.Combine(dir, "options.json")));
        Assert.Equal(options, File.ReadAllText(Path.Combine(dir, "options.json")));
    }

    [Fact]
    public void Terse_with_grpo_is_refused_rather_than_ignored() =>
        UserError(Run("train", "grpo", "--terse", "--runs", TestData.TempDir()), "--terse is for sft only");

    [Fact]
    public void Rows_skipped_with_skip_bad_are_reported()
    {
        var tsv = Path.Combine(TestData.TempDir(), "cola.tsv");
        File.WriteAllLines(
            tsv,
            Enumerable.Range(0, 60).Select(i => $"src\t{i % 2}\t\tThe cat number {i} sleeps.").Append("bad row")
        );
        var runs = TestData.TempDir();
        var r = Run(
            "train",
            "sft",
            "--preset",
            "tiny",
            "--dataset",
            $"cola:{tsv}",
            "--train-size",
            "40",
            "--skip-bad",
            "--runs",
            runs,
            "--set",
            "max_steps=1",
            "--set",
            "per_device_train_batch_size=4"
        );
        Assert.True(r.Code == 0, r.Err);
        Assert.Contains($"skipped 1 bad row(s) of {tsv}", r.Err);
        Assert.Contains("cola.tsv:61", r.Err);
        Assert.Contains($"skipped 1 bad row(s) of {tsv}", r.Out); // the run's log too
    }

    [Fact]
    public void Rows_skipped_in_run_are_counted_for_its_log_and_summary_and_the_error_names_the_run_form()
    {
        var tsv = Path.Combine(TestData.TempDir(), "cola.tsv");
        File.WriteAllLines(
            tsv,
            Enumerable.Range(0, 60).Select(i => $"src\t{i % 2}\t\tThe cat number {i} sleeps.").Append("bad row")
        );
        var task = TaskRegistry.Create(
            $"cola:{tsv}",
            0,
            new TaskOptions
            {
                TrainSize = 40,
                EvalSize = 4,
                SkipBad = true,
            }
        );
        Assert.Equal(1, task.SkippedBadRows); // RunAndReport writes it to summary.json as skipped_bad_rows
        Assert.Contains(task.Notes, n => n.StartsWith($"skipped 1 bad row(s) of {tsv}") && n.Contains("cola.tsv:61"));
        var runs = TestData.TempDir();
        UserError(Run("run", "sft-then-rl", "--runs", runs, "--dataset", $"cola:{tsv}"), "--set task.skip_bad=true");
        Assert.Empty(Directory.GetFileSystemEntries(runs));
    }

    [Fact]
    public void A_sweep_or_landscape_that_fails_on_bad_input_leaves_no_run_folder()
    {
        var runs = TestData.TempDir();
        UserError(
            Run("sweep", "--quick", "--runs", runs, "--set", "dataset=\"cola:/no/such/file.tsv\""),
            "file not found"
        );
        Assert.Empty(Directory.GetFileSystemEntries(runs));
        var bad = new Workbook.Theory.TransformerLandscapeOptions { ExpertMix = [1] };
        Assert.Contains(
            "expert_mix",
            Assert.Throws<WorkbookException>(() => Workbench.TransformerLandscape(true, bad, runs, _ => { })).Message
        );
        Assert.Empty(Directory.GetFileSystemEntries(runs));
    }

    [Fact]
    public void Invalid_utf8_in_a_data_file_names_the_line()
    {
        var path = Path.Combine(TestData.TempDir(), "d.jsonl");
        File.WriteAllBytes(
            path,
            [
                .. Encoding.UTF8.GetBytes("{\"text\":\"ok\"}\n{\"text\":\""),
                0xff,
                0xfe,
                .. Encoding.UTF8.GetBytes("\"}\n"),
            ]
        );
        var e = Assert.Throws<WorkbookException>(() => RowReader.Read(path, l => l, false));
        Assert.Contains("invalid UTF-8", e.Message);
        Assert.Contains("d.jsonl:2", e.Message);
    }

    [Fact]
    public void An_endless_run_of_letters_is_refused_instead_of_tokenized_in_quadratic_time()
    {
        var tok = Workbook.Text.Qwen3Tokenizer.Load(Workbook.Text.TokenizerFiles.EnsureDefault(_ => { }));
        Assert.NotEmpty(tok.Encode(new string('a', 10_000) + " b"));
        var e = Assert.Throws<WorkbookException>(() => tok.Encode(new string('a', 640_000)));
        Assert.Contains("unbroken run of 640,000 characters", e.Message);
    }

    [Fact]
    public void A_tokenizer_json_with_a_bad_regex_or_a_float_id_names_the_file()
    {
        var src = Workbook.Text.TokenizerFiles.EnsureDefault(_ => { });
        var json = File.ReadAllText(Directory.Exists(src) ? Path.Combine(src, "tokenizer.json") : src);
        var node = JsonNode.Parse(json)!.AsObject();
        var dir = TestData.TempDir();
        var bad = Path.Combine(dir, "tokenizer.json");
        var regex = node.DeepClone().AsObject();
        SetSplit(regex["pre_tokenizer"]!, "(unclosed");
        File.WriteAllText(bad, regex.ToJsonString());
        Assert.Contains(
            "Split regex is invalid",
            Assert.Throws<WorkbookException>(() => Workbook.Text.Qwen3Tokenizer.Load(bad)).Message
        );
        var id = node.DeepClone().AsObject();
        id["added_tokens"]![0]!["id"] = 1.5;
        File.WriteAllText(bad, id.ToJsonString());
        Assert.Contains(
            "not an integer",
            Assert.Throws<WorkbookException>(() => Workbook.Text.Qwen3Tokenizer.Load(bad)).Message
        );
    }

    static void SetSplit(JsonNode pre, string pattern)
    {
        if (pre["type"]?.GetValue<string>() == "Split")
            pre["pattern"]!["Regex"] = pattern;
        if (pre["pretokenizers"] is JsonArray list)
            foreach (var p in list)
                SetSplit(p!, pattern);
    }

    [Fact]
    public void Empty_step_folders_left_by_a_kill_are_cleaned_at_start()
    {
        var run = TestData.TempDir();
        var root = Path.Combine(run, "checkpoints");
        Directory.CreateDirectory(Path.Combine(root, "step-000005"));
        Directory.CreateDirectory(Path.Combine(root, ".tmp-step-000006-x"));
        Directory.CreateDirectory(Path.Combine(root, "step-000004"));
        File.WriteAllText(Path.Combine(root, "step-000004", "trainer_state.json"), "{}");
        TrainerCheckpoint.CleanTemp(run);
        Assert.Equal(["step-000004"], Directory.GetDirectories(root).Select(Path.GetFileName));
    }

    [Fact]
    public void A_checkpoint_with_non_finite_weights_is_saved_and_never_counted_good()
    {
        var run = TestData.TempDir();
        using var m = new Qwen3ForCausalLM(Qwen3Config.Preset("tiny"), TorchSharp.torch.ScalarType.Float32, null, 1);
        using var opt = new AdamW(m.named_parameters(), 0.9, 0.999, 1e-8, 0);
        var good = CheckpointHealth.Judge(CheckpointHealth.MaxAbsOf(m), 1, CheckpointHealth.MaxAbsOf(m), 1);
        var first = TrainerCheckpoint.Save(run, m, opt, new TrainerState(1, 0, 0, 0, 1, "sft"), 1, good);
        using (TorchSharp.torch.no_grad())
        using (TorchSharp.Scalar infinity = double.PositiveInfinity)
            m.model.norm.weight.fill_(infinity);
        var inf = CheckpointHealth.Judge(CheckpointHealth.MaxAbsOf(m), 1, good.StartMaxAbsWeight, 1);
        Assert.False(inf.Good);
        TrainerCheckpoint.Save(run, m, opt, new TrainerState(2, 0, 0, 0, 1, "sft"), 1, inf);
        Assert.Equal(double.PositiveInfinity, TrainerCheckpoint.Health(TrainerCheckpoint.Latest(run)!)!.MaxAbsWeight);
        Assert.Equal(first, TrainerCheckpoint.LatestGood(run)); // kept beyond save_total_limit 1
        Assert.False(CheckpointHealth.Judge(1e6, 1, 1, 1).Good); // exploded but finite
        Assert.False(CheckpointHealth.Judge(1, 1e9, 1, 1).Good); // the gradient norm grew by orders of magnitude
        Assert.True(CheckpointHealth.Judge(5, 20, 1, 1).Good);
    }

    [Fact]
    public void Checkpoint_temp_folders_of_a_live_process_are_kept_and_a_dead_one_s_removed()
    {
        var run = TestData.TempDir();
        var root = Path.Combine(run, "checkpoints");
        var live = Path.Combine(root, $".tmp-step-000006-{Environment.ProcessId}-abc");
        var dead = Path.Combine(root, ".tmp-step-000007-999999999-abc");
        Directory.CreateDirectory(live);
        Directory.CreateDirectory(dead);
        TrainerCheckpoint.CleanTemp(run);
        Assert.True(Directory.Exists(live));
        Assert.False(Directory.Exists(dead));
    }

    [Fact]
    public void A_killed_base_stage_under_any_cache_key_is_cleaned_at_the_next_start()
    {
        var cache = TestData.TempDir();
        var dead = Path.Combine(cache, "base", "aaaaaaaaaaaa", ".tmp-seed-1000-999999999-abc");
        var live = Path.Combine(cache, "base", "bbbbbbbbbbbb", $".tmp-seed-1000-{Environment.ProcessId}-abc");
        var done = Path.Combine(cache, "base", "bbbbbbbbbbbb", "seed-1000");
        foreach (var d in new[] { dead, live, done })
            Directory.CreateDirectory(d);
        ExperimentRunner.RemoveAbandonedBaseWork(cache);
        Assert.False(Directory.Exists(dead));
        Assert.True(Directory.Exists(live));
        Assert.True(Directory.Exists(done));
    }

    [Fact]
    public void Verify_on_an_empty_file_says_it_has_no_rows()
    {
        var path = Path.Combine(TestData.TempDir(), "empty.jsonl");
        File.WriteAllText(path, "");
        UserError(Run("verify", "--verifier", "cola-strict", "--input", path), "no rows");
    }

    [Fact]
    public void Tokenize_decode_refuses_ids_outside_the_vocabulary()
    {
        UserError(Run("tokenize", "--decode", "1,999999999"), "999999999");
    }

    // ---- issue 10: the CLI as one tool ------------------------------------------------------------------------

    [Fact]
    public void A_typed_option_with_a_bad_value_names_the_option_and_the_value()
    {
        UserError(Run("run", "all", "--seeds", "x"), "--seeds: expected an integer, got 'x'");
        UserError(Run("landscape", "--beta=abc"), "--beta: expected a number, got 'abc'");
        UserError(Run("train", "sft", "--train-size", "1e3"), "--train-size: expected an integer, got '1e3'");
    }

    [Fact]
    public void An_unknown_set_key_names_the_nearest_known_key()
    {
        var e = Assert.Throws<WorkbookException>(() => RunCommand.LoadConfig(null, false, ["sft.learnin_rate=1"]));
        Assert.Contains("did you mean 'sft.learning_rate'", e.Message);
        var t = Assert.Throws<WorkbookException>(() => TrainOptions.Load<GrpoOptions>(null, ["num_generation=4"]));
        Assert.Contains("did you mean 'num_generations'", t.Message);
        var ty = Assert.Throws<WorkbookException>(() => RunCommand.LoadConfig(null, false, ["sft.max_steps=abc"]));
        Assert.Contains("sft.max_steps: expected an integer", ty.Message);
    }

    [Fact]
    public void Report_on_a_folder_that_is_not_a_run_says_so()
    {
        UserError(Run("report", TestData.TempDir()), "not a run folder");
    }

    [Fact]
    public void Every_option_of_every_verb_has_a_help_line()
    {
        var verbs = typeof(RunCommand)
            .Assembly.GetTypes()
            .Where(t =>
                t.Namespace == "Workbook.Cli"
                && t.IsSubclassOf(typeof(Spectre.Console.Cli.CommandSettings))
                && !t.IsAbstract
            );
        var missing = new List<string>();
        foreach (var t in verbs)
        foreach (var p in t.GetProperties())
            if (
                p.GetCustomAttributes(typeof(Spectre.Console.Cli.CommandOptionAttribute), true).Length > 0
                && p.GetCustomAttributes(typeof(System.ComponentModel.DescriptionAttribute), true).Length == 0
                && t.DeclaringType != typeof(BenchCommand)
            ) // BenchCommand.cs belongs to the benchmarks' owner
                missing.Add($"{t.DeclaringType?.Name ?? t.Name}.{p.Name}");
        Assert.Empty(missing);
    }

    [Fact]
    public void Redirected_output_is_plain_and_honours_logging_steps()
    {
        var runs = TestData.TempDir();
        var r = Run(
            "train",
            "sft",
            "--preset",
            "tiny",
            "--train-size",
            "40",
            "--runs",
            runs,
            "--set",
            "max_steps=4",
            "--set",
            "logging_steps=2",
            "--set",
            "per_device_train_batch_size=4"
        );
        Assert.True(r.Code == 0, r.Err);
        Assert.False(r.Out.Contains('\x1b'), $"escape codes in the output:\n{r.Out}");
        var steps = r.Out.Split('\n').Where(l => l.StartsWith("sft step ")).Select(l => l.Split(' ')[2]).ToList();
        Assert.Equal(["2/4", "4/4"], steps);
        Assert.Single(Directory.GetDirectories(runs)); // --runs is where train writes
    }

    [Fact]
    public void Eval_dataset_and_jobs_get_clear_errors_before_a_run_folder_exists()
    {
        var runs = TestData.TempDir();
        UserError(Run("run", "all", "--runs", runs, "--eval-dataset", "dev.tsv"), "expected cola:FILE");
        UserError(Run("run", "all", "--runs", runs, "--eval-dataset", "cola:/no/such/dev.tsv"), "file not found");
        var dev = Path.Combine(runs, "dev.tsv");
        File.WriteAllText(dev, "src\t1\t\tA sentence.\n");
        UserError(Run("run", "all", "--runs", runs, "--eval-dataset", $"cola:{dev}"), "only for cola:FILE");
        UserError(Run("run", "all", "--runs", runs, "--jobs", "-1"), "jobs");
        UserError(Run("run", "sft-then-rl", "--runs", runs, "--pipelines", "all"), "--pipelines");
        UserError(Run("run", "all", "--runs", runs, "--pipelines", "sft-then-rl,nope"), "unknown pipeline 'nope'");
        Assert.Empty(Directory.GetDirectories(runs));
    }
}
