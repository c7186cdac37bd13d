// No silent no-ops: an option is honoured or refused. bench refuses, before measuring anything, a case option
// (--batch, --seq, --steps, --warmup, --clip, --memory-steps, --machine-peak, --repeats, --gen-batch, --text) that the
// chosen case does not use; `bench all` takes one that any of its cases uses. A resumed sweep refuses every option
// that would change its config.json or grid.json, and honours --null; a resumed run refuses the same ones (it has no
// grid) and its own (--jobs, --dataset, --eval-dataset), each by name; train refuses --runs beside --run-dir or
// --resume. Parsing runs in-process through Spectre's CommandApp (an interceptor captures the bound settings instead
// of running the command); one process run checks the exit code and that nothing was measured.
using System.ComponentModel;
using System.Diagnostics;
using System.Reflection;
using Spectre.Console.Cli;
using Workbook.Cli;

namespace Workbook.Tests;

public class SilentOptionTests
{
    /// <summary>The settings the CLI's parser binds and validates for <paramref name="args"/>; a refusal is the
    /// parser's CommandRuntimeException (the CLI prints it as "error: ..." with exit code 2).</summary>
    static CommandSettings Parse(params string[] args) => CliParse.Settings(args);

    /// <summary>Null when the options are valid, else the error message.</summary>
    static string? Problem(params string[] args)
    {
        try
        {
            Parse(args);
            return null;
        }
        catch (CommandRuntimeException e)
        {
            return e.Message;
        }
    }

    [Theory]
    [InlineData("gemm", "--seq", "64", "train and all")]
    [InlineData("gemm", "--batch", "4", "train and all")]
    [InlineData("generate", "--steps", "5", "train and all")]
    [InlineData("grpo", "--warmup", "1", "train and all")]
    [InlineData("tokenizer", "--clip", "1", "train and all")]
    [InlineData("generate", "--memory-steps", "10", "train and all")]
    [InlineData("generate", "--machine-peak", "500", "gemm, train and all")]
    [InlineData("grpo", "--machine-peak", "500", "gemm, train and all")]
    [InlineData("train", "--repeats", "2", "generate and all")]
    [InlineData("grpo", "--repeats", "2", "generate and all")]
    [InlineData("train", "--gen-batch", "1", "generate and all")]
    [InlineData("gemm", "--text", "some.txt", "tokenizer and all")]
    [InlineData("generate", "--text", "some.txt", "tokenizer and all")]
    [InlineData("train", "--size", "256", "gemm")]
    [InlineData("all", "--size", "256", "gemm")]
    public void A_bench_case_refuses_an_option_it_does_not_use(string what, string option, string value, string uses)
    {
        Assert.Equal(
            $"{option}: not used by bench {what} (it applies to {uses})",
            Problem("bench", what, option, value)
        );
        Assert.Equal(
            $"{option}: not used by bench {what} (it applies to {uses})",
            Problem("bench", what, $"{option}={value}")
        );
    }

    [Theory]
    [InlineData("train", "--batch", "1", "--seq", "8", "--steps", "1", "--warmup", "0", "--clip", "1")]
    [InlineData("train", "--memory-steps", "5", "--machine-peak", "500", "--dtype", "bf16", "--out", "b.json")]
    [InlineData("generate", "--repeats", "1", "--gen-batch", "1", "--vocab", "1000", "--json")]
    [InlineData("gemm", "--machine-peak", "500", "--dtype", "f32", "--size", "256")]
    [InlineData("tokenizer", "--text", "some.txt")]
    [InlineData("grpo", "--preset", "small", "--device", "cpu")]
    // all: every case option is used by one of its cases (train, grpo, generate, tokenizer), which honours it
    [InlineData(
        "all",
        "--batch",
        "1",
        "--seq",
        "8",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--clip",
        "1",
        "--memory-steps",
        "5"
    )]
    [InlineData("all", "--machine-peak", "500", "--repeats", "1", "--gen-batch", "1", "--text", "some.txt")]
    public void A_bench_case_accepts_the_options_it_uses(params string[] args) =>
        Assert.Null(Problem(["bench", .. args]));

    [Fact]
    public void Bench_keeps_its_defaults_when_an_option_is_not_given()
    {
        var s = (BenchCommand.Settings)Parse("bench", "train");
        Assert.Null(s.Batch);
        Assert.Null(s.Seq);
        Assert.Equal(
            (8, 256, 10, 3, 3, 0, 0.0),
            (
                s.BatchOrDefault,
                s.SeqOrDefault,
                s.StepsOrDefault,
                s.WarmupOrDefault,
                s.RepeatsOrDefault,
                s.MemoryStepsOrDefault,
                s.ClipOrDefault
            )
        );
        var given = (BenchCommand.Settings)Parse("bench", "train", "--batch", "2", "--seq", "16", "--clip", "1.5");
        Assert.Equal((2, 16, 1.5), (given.BatchOrDefault, given.SeqOrDefault, given.ClipOrDefault));
    }

    [Theory]
    [InlineData("--batch", "0", "--batch 0: must be at least 1")]
    [InlineData("--seq", "1", "--seq 1: must be at least 2")]
    [InlineData("--clip", "-0.5", "--clip -0.5: must be >= 0")]
    public void A_bad_value_of_a_used_option_is_still_refused(string option, string value, string message) =>
        Assert.Equal(message, Problem("bench", "train", option, value));

    /// <summary>Every bench option is either a case option (whose help line starts with the cases that use it, and
    /// names its default where it has one) or one of the options with their own rules; a new option must be
    /// placed.</summary>
    [Fact]
    public void Every_bench_option_is_placed_and_its_help_line_names_its_cases()
    {
        string[] ownRules = ["--model", "--preset", "--dtype", "--device", "--vocab", "--out", "--json"];
        foreach (var p in typeof(BenchCommand.Settings).GetProperties())
        {
            if (p.GetCustomAttribute<CommandOptionAttribute>() is not { } a)
                continue;
            var option = "--" + a.LongNames.Single();
            if (ownRules.Contains(option))
                continue;
            Assert.True(BenchCommand.Settings.CaseOptions.ContainsKey(option), $"{option} is in no case");
            var help = p.GetCustomAttribute<DescriptionAttribute>()!.Description;
            Assert.StartsWith(string.Join(", ", BenchCommand.Settings.CasesUsing(option)) + ": ", help);
            Assert.Null(p.GetCustomAttribute<DefaultValueAttribute>()); // a default would hide whether it was given
            Assert.True(Nullable.GetUnderlyingType(p.PropertyType) is not null || !p.PropertyType.IsValueType, option);
        }
        Assert.All(
            BenchCommand.Settings.CaseOptions.Values.SelectMany(c => c),
            c => Assert.Contains(c, new[] { "gemm", "train", "generate", "grpo", "tokenizer" })
        );
    }

    [Fact]
    public void The_cli_refuses_an_unused_bench_option_before_measuring_anything()
    {
        var psi = new ProcessStartInfo(
            "dotnet",
            [Path.Combine(AppContext.BaseDirectory, "workbook.dll"), "bench", "gemm", "--seq", "64", "--json"]
        )
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var output = p.StandardOutput.ReadToEnd();
        Assert.True(p.WaitForExit(120_000), "the CLI did not finish");
        Assert.Equal(2, p.ExitCode);
        Assert.Equal("error: --seq: not used by bench gemm (it applies to train and all)", err.Result.Trim());
        Assert.Equal("", output.Trim()); // no measurement
    }

    const string Config = "a resumed sweep uses its own config.json; start a new sweep to change it";
    const string Grid = "a resumed sweep keeps its grid (grid.json); start a new sweep to change it";

    public static readonly TheoryData<string[], string> ResumedSweepRefusals = new()
    {
        { ["--config", "configs/sweep-converged.json"], $"--config: {Config}" },
        { ["--set", "grpo.max_steps=10"], $"--set: {Config}" },
        { ["--seeds", "2"], $"--seeds: {Config}" },
        { ["--model", "/m"], $"--model: {Config}" },
        { ["--dtype", "bf16"], $"--dtype: {Config}" },
        { ["--device", "cpu"], $"--device: {Config}" },
        {
            ["--quick"],
            "--quick: a resumed sweep keeps its config.json and grid.json; start a new sweep to change them"
        },
        { ["--beta", "0.25"], $"--beta: {Grid}" },
        { ["--loose-format-fraction", "0"], $"--loose-format-fraction: {Grid}" },
        { ["--no-twin"], $"--no-twin: {Grid}" },
        { ["--steps-beta", "0.25"], $"--steps-beta: {Grid}" },
        { ["--steps-power", "2"], $"--steps-power: {Grid}" },
        { ["--runs", "elsewhere"], "--runs: a resumed sweep stays in its folder, --resume RUN_DIR; drop --runs" },
    };

    [Theory]
    [MemberData(nameof(ResumedSweepRefusals))]
    public void A_resumed_sweep_refuses_an_option_that_would_change_its_config_or_grid(string[] option, string error)
    {
        Assert.Equal(error, Problem(["sweep", "--resume", "runs/x", .. option]));
        Assert.Equal(error, Problem(["sweep", .. option, "--resume", "runs/x", "--null", "all"]));
    }

    [Theory]
    [InlineData("sweep", "--resume", "runs/x")]
    [InlineData("sweep", "--resume", "runs/x", "--null", "all")] // honoured: adds the nulls to a finished sweep
    [InlineData("sweep", "--resume", "runs/x", "--null", "tested")]
    [InlineData("sweep", "--beta", "0.25,0.5", "--loose-format-fraction", "0", "--no-twin", "--seeds", "2")]
    [InlineData("sweep", "--beta", "0.125,0.25", "--steps-beta", "0.25", "--steps-power", "2")]
    [InlineData("sweep", "--quick", "--config", "c.json", "--set", "a=1", "--runs", "r", "--null", "none")]
    [InlineData("sweep", "--model", "/m", "--dtype", "bf16", "--device", "cpu")]
    public void A_sweep_accepts_the_options_it_honours(params string[] args) => Assert.Null(Problem(args));

    [Fact]
    public void A_resumed_sweep_keeps_null_and_a_new_sweep_defaults_runs()
    {
        var resumed = (SweepCommand.Settings)Parse("sweep", "--resume", "runs/x", "--null", "all");
        Assert.Equal(("runs/x", "all"), (resumed.Resume, resumed.Null));
        Assert.Null(((SweepCommand.Settings)Parse("sweep")).Runs); // Execute writes under "runs"
    }

    public static readonly TheoryData<string[]> ResumedRunRefusals = new()
    {
        { ["--config", "c.json"] },
        { ["--set", "seeds=2"] },
        { ["--seeds", "2"] },
        { ["--jobs", "1"] },
        { ["--quick"] },
        { ["--model", "/m"] },
        { ["--dataset", "arithmetic"] },
        { ["--eval-dataset", "cola:dev.tsv"] },
        { ["--dtype", "bf16"] },
        { ["--device", "cpu"] },
    };

    [Theory]
    [MemberData(nameof(ResumedRunRefusals))]
    public void A_resumed_run_refuses_by_name_an_option_that_would_change_its_config(string[] option)
    {
        Assert.Equal(
            $"{option[0]}: a resumed run uses its own config.json; start a new run to change it",
            Problem(["run", "all", "--resume", "runs/x", .. option])
        );
        Assert.Null(Problem(["run", "all", .. option])); // a new run takes it
    }

    [Fact]
    public void A_resumed_run_stays_in_its_folder_and_takes_its_pipelines()
    {
        Assert.Equal(
            "--runs: a resumed run stays in its folder, --resume RUN_DIR; drop --runs",
            Problem("run", "all", "--resume", "runs/x", "--runs", "elsewhere")
        );
        Assert.Null(Problem("run", "all", "--resume", "runs/x", "--pipelines", "sft-then-rl"));
        Assert.Null(((RunCommand.Settings)Parse("run", "all")).Runs); // Execute writes under "runs"
    }

    [Fact]
    public void Train_refuses_runs_beside_a_named_folder_and_keeps_its_default()
    {
        Assert.Equal(
            "--runs: the run goes to its folder, --run-dir RUN_DIR; drop --runs",
            Problem("train", "sft", "--run-dir", "runs/x", "--runs", "elsewhere")
        );
        Assert.Equal(
            "--runs: a resumed run stays in its folder, --resume RUN_DIR; drop --runs",
            Problem("train", "sft", "--resume", "runs/x", "--runs", "elsewhere")
        );
        Assert.Null(Problem("train", "sft", "--runs", "elsewhere"));
        Assert.Null(((TrainCommand.Settings)Parse("train", "sft")).Runs); // Execute writes under "runs"
    }

    [Theory]
    [InlineData("--steps-beta: 0 is not a β above 0", "--steps-beta", "0")]
    [InlineData("--steps-power: it scales --steps-beta's budget; give --steps-beta too", "--steps-power", "2")]
    [InlineData("--steps-power: -1 is not a number >= 0", "--steps-beta", "0.25", "--steps-power", "-1")]
    public void A_sweep_refuses_a_budget_scaling_it_cannot_use(string error, params string[] option) =>
        Assert.Equal(error, Problem(["sweep", .. option]));
}
