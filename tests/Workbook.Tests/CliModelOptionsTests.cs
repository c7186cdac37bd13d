// The CLI as one tool (issue 10): every verb that loads a model takes it through ModelSettings, so the options are
// parsed the same way with the same defaults; an option a verb (or one of bench's cases) cannot honour is refused by
// name; a renamed option (train --out, bench --runs) says its new name. Parsing runs in-process through Spectre's
// CommandApp (an interceptor captures the bound settings); two process runs check the wiring and bench --model.
using System.Diagnostics;
using System.Reflection;
using System.Text.Json.Nodes;
using Spectre.Console.Cli;
using Workbook.Cli;
using Workbook.Experiments;
using Workbook.Model;
using Workbook.Training;

namespace Workbook.Tests;

public class CliModelOptionsTests
{
    /// <summary>The verbs that load a model, with the arguments each needs to parse.</summary>
    public static readonly TheoryData<string, string[]> ModelVerbs = new()
    {
        { "train", ["sft"] },
        { "run", ["sft-then-rl"] },
        { "sweep", [] },
        { "bench", ["train"] },
        { "generate", ["--ids", "1"] },
        { "score", ["--ids", "1"] },
    };

    /// <summary>The verbs whose model is a folder or a preset (run and sweep build the config's own model).</summary>
    public static readonly TheoryData<string, string[]> PresetVerbs = new()
    {
        { "train", ["sft"] },
        { "bench", ["train"] },
        { "generate", ["--ids", "1"] },
        { "score", ["--ids", "1"] },
    };

    /// <summary>The settings the CLI's parser binds and validates for <paramref name="args"/> (a verb's refusal is
    /// the parser's CommandRuntimeException, which the CLI prints as "error: ..." with exit code 2).</summary>
    static ModelSettings Parse(params string[] args) => (ModelSettings)CliParse.Settings(args);

    /// <summary>The verb's verdict on its options: null when they are valid, else the error message.</summary>
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

    [Fact]
    public void No_verb_declares_its_own_model_options()
    {
        string[] modelOptions = ["model", "preset", "dtype", "device"];
        var own = typeof(ModelSettings)
            .Assembly.GetTypes()
            .Where(t => t.IsSubclassOf(typeof(CommandSettings)) && t != typeof(ModelSettings))
            // export-recipe's --model is the default the written script loads on its machine; nothing loads it here
            .Where(t => t.DeclaringType != typeof(ExportRecipeCommand))
            .SelectMany(t =>
                t.GetProperties(BindingFlags.Public | BindingFlags.Instance | BindingFlags.DeclaredOnly)
                    .Where(p =>
                        p.GetCustomAttribute<CommandOptionAttribute>()?.LongNames.Intersect(modelOptions).Any() == true
                    )
                    .Select(p => $"{t.DeclaringType?.Name}.{p.Name}")
            );
        Assert.Empty(own);
        foreach (var t in new[] { typeof(TrainCommand), typeof(RunCommand), typeof(SweepCommand) })
            Assert.True(t.GetNestedType("Settings")!.IsSubclassOf(typeof(ModelSettings)), t.Name);
        Assert.True(typeof(BenchCommand.Settings).IsSubclassOf(typeof(ModelSettings)));
        Assert.True(typeof(GenerateCommand.Settings).IsSubclassOf(typeof(ModelSettings)));
        Assert.True(typeof(ScoreCommand.Settings).IsSubclassOf(typeof(ModelSettings)));
    }

    [Theory]
    [MemberData(nameof(ModelVerbs))]
    public void Without_model_options_every_verb_has_the_same_dtype_and_device(string verb, string[] required)
    {
        var s = Parse([verb, .. required]);
        Assert.Null(s.Model);
        Assert.Null(s.Preset);
        Assert.Equal("f32", s.DTypeOrDefault);
        Assert.Equal("auto", s.DeviceOrDefault);
        Assert.Null(Problem([verb, .. required]));
    }

    [Theory]
    [MemberData(nameof(PresetVerbs))]
    public void Every_verb_that_takes_a_preset_defaults_to_tiny_and_parses_the_options_alike(
        string verb,
        string[] required
    )
    {
        Assert.Equal("tiny", Parse([verb, .. required]).PresetOrDefault);
        var s = Parse([verb, .. required, "--preset", "small", "--dtype", "bf16", "--device", "cpu"]);
        Assert.Equal(("small", "bf16", "cpu"), (s.PresetOrDefault, s.DTypeOrDefault, s.DeviceOrDefault));
        Assert.Null(Problem([verb, .. required, "--preset", "small", "--dtype", "bf16", "--device", "cpu"]));
        var m = Parse([verb, .. required, "--model", "/some/folder"]);
        Assert.Equal(("/some/folder", null), (m.Model, m.PresetOrDefault));
    }

    [Fact]
    public void The_configs_that_feed_train_and_run_default_to_the_same_dtype_and_device()
    {
        // train's --dtype falls back on the options' dtype, run's and sweep's on the config's: the same defaults
        Assert.Equal(ModelSettings.DefaultDType, new SftOptions().Dtype);
        Assert.Equal(ModelSettings.DefaultDType, new GrpoOptions().Dtype);
        Assert.Equal(ModelSettings.DefaultDType, new ExperimentConfig().Dtype);
        Assert.Equal(ModelSettings.DefaultDevice, new ExperimentConfig().Device);
    }

    [Theory]
    [InlineData("--preset", new[] { "bench", "gemm", "--preset", "small" })]
    [InlineData("--model", new[] { "bench", "tokenizer", "--model", "/m" })]
    [InlineData("--vocab", new[] { "bench", "gemm", "--vocab", "1000" })]
    [InlineData("--dtype", new[] { "bench", "tokenizer", "--dtype", "bf16" })]
    [InlineData("--model", new[] { "bench", "grpo", "--model", "/m" })]
    [InlineData("--model", new[] { "bench", "all", "--model", "/m" })]
    [InlineData("--vocab", new[] { "bench", "all", "--vocab", "1000" })]
    [InlineData("--vocab", new[] { "bench", "train", "--model", "/m", "--vocab", "1000" })]
    [InlineData("--preset", new[] { "run", "sft-then-rl", "--preset", "small" })]
    [InlineData("--preset", new[] { "sweep", "--preset", "tiny" })]
    [InlineData("--dtype", new[] { "sweep", "--resume", "runs/x", "--dtype", "bf16" })]
    [InlineData("--preset", new[] { "train", "sft", "--preset", "huge" })]
    [InlineData("--dtype", new[] { "score", "--ids", "1", "--dtype", "f16" })]
    [InlineData("--device", new[] { "generate", "--ids", "1", "--device", "tpu" })]
    [InlineData(
        "--model DIR and --preset NAME",
        new[] { "generate", "--ids", "1", "--model", "m", "--preset", "tiny" }
    )]
    public void An_option_a_verb_cannot_honour_is_refused_by_name(string named, string[] args)
    {
        var problem = Problem(args);
        Assert.NotNull(problem);
        Assert.Contains(named, problem);
        if (!named.Contains(' '))
            Assert.StartsWith($"{named}: ", problem);
    }

    [Theory]
    [InlineData("bench", "train", "--preset", "small", "--dtype", "bf16")]
    [InlineData("bench", "generate", "--model", "/m")]
    [InlineData("bench", "grpo", "--preset", "small", "--dtype", "bf16")]
    [InlineData("bench", "all", "--preset", "small")]
    [InlineData("bench", "gemm", "--dtype", "bf16")]
    public void A_bench_case_accepts_the_model_options_it_uses(params string[] args) => Assert.Null(Problem(args));

    static readonly Dictionary<string, Type> Verbs = new()
    {
        ["train"] = typeof(TrainCommand),
        ["bench"] = typeof(BenchCommand),
        ["run"] = typeof(RunCommand),
        ["report"] = typeof(CouplingReportCommand),
    };

    [Theory]
    [InlineData("--run-dir RUN_DIR", "train", "sft", "--out", "somewhere")]
    [InlineData("--repeats N", "bench", "generate", "--runs", "3")]
    [InlineData("--repeats N", "bench", "generate", "--runs=3")]
    public void A_renamed_option_names_its_new_spelling(string hint, params string[] args)
    {
        var problem = OptionCheck.Check(args, Verbs);
        Assert.NotNull(problem);
        Assert.StartsWith(args[2].Split('=')[0] + ": ", problem);
        Assert.Contains(hint, problem);
    }

    [Theory]
    [InlineData("run", "sft-then-rl", "--runs", "somewhere")]
    [InlineData("train", "sft", "--runs", "somewhere")]
    [InlineData("bench", "train", "--out", "bench.json")]
    [InlineData("report", "--from-trl", "d", "--out", "r.html")]
    public void Runs_and_out_keep_their_one_meaning(params string[] args) =>
        Assert.Null(OptionCheck.Check(args, Verbs));

    static (int Code, string Out, string Err) Cli(params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet", [Path.Combine(AppContext.BaseDirectory, "workbook.dll"), .. args])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        using var p = Process.Start(psi)!;
        var err = p.StandardError.ReadToEndAsync();
        var output = p.StandardOutput.ReadToEnd();
        Assert.True(p.WaitForExit(120_000), "the CLI did not finish");
        return (p.ExitCode, output, err.Result);
    }

    [Fact]
    public void The_cli_refuses_an_unusable_option_and_an_old_spelling_with_one_error_line()
    {
        var r = Cli("bench", "gemm", "--preset", "small");
        Assert.Equal(2, r.Code);
        Assert.StartsWith("error: --preset: bench gemm measures no model", r.Err.Trim());
        r = Cli("train", "sft", "--out", TestData.TempDir());
        Assert.Equal(2, r.Code);
        Assert.StartsWith("error: --out: train writes a run folder: use --run-dir RUN_DIR", r.Err.Trim());
    }

    [Fact]
    public void Bench_measures_the_default_preset_or_the_shapes_of_a_model_folder()
    {
        string[] quick = ["--steps", "1", "--warmup", "0", "--batch", "1", "--seq", "8", "--json"];
        var r = Cli(["bench", "train", .. quick]);
        Assert.True(r.Code == 0, r.Err);
        var j = JsonNode.Parse(r.Out)!;
        Assert.Equal("tiny", (string?)j["preset"]);
        Assert.Equal("f32", (string?)j["dtype"]);
        Assert.Equal(Qwen3Config.Tiny(512).ParameterCount(), (long)j["parameters"]!);

        var dir = TestData.TempDir();
        var cfg = Qwen3Config.Tiny(100);
        File.WriteAllText(Path.Combine(dir, "config.json"), cfg.ToJson());
        r = Cli(["bench", "train", "--model", dir, .. quick]);
        Assert.True(r.Code == 0, r.Err);
        j = JsonNode.Parse(r.Out)!;
        Assert.Equal(dir, (string?)j["model"]);
        Assert.Null(j["preset"]);
        Assert.Equal(100, (int)j["vocab"]!);
        Assert.Equal(cfg.ParameterCount(), (long)j["parameters"]!);
    }
}
