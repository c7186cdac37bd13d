using System.ComponentModel;
using System.Diagnostics;
using System.Text.Json;
using Spectre.Console;
using Spectre.Console.Cli;
using Workbook.Experiments;
using Workbook.Reports;
using Workbook.Training;

namespace Workbook.Cli;

/// <summary>`workbook sweep`: SFT then RL (kl_mode = reward) over a grid of β and loose_format_fraction; predicted
/// against measured SFT-loss rise, and the RL-then-SFT twin. Writes sweep.json and sweep.html.</summary>
public sealed class SweepCommand : Command<SweepCommand.Settings>
{
    /// <summary>The model options are <see cref="ModelSettings"/>'s and mean what they mean for run: --model DIR,
    /// --dtype and --device go into the config; --preset is refused.</summary>
    public sealed class Settings : ModelSettings
    {
        [CommandOption("--beta <LIST>")]
        [Description("KL coefficients, comma-separated, each > 0 (default 0.25,0.5,1,2)")]
        public string? Beta { get; init; }

        [CommandOption("--loose-format-fraction <LIST>")]
        [Description("Shares of natural-words expert responses, in [[0, 1]] (default 0.35,0)")]
        public string? LooseFormatFraction { get; init; }

        [CommandOption("--no-twin")]
        [Description("Skip the RL-then-SFT twin (SFT again after each RL stage)")]
        public bool NoTwin { get; init; }

        [CommandOption("--null <WHERE>")]
        [Description(
            "Where the coin-reward null runs (RL with a fair coin as the reward, predicted rise 0): all (default), "
                + "tested (points predicted >= 0.1 nats/response) or none; with --resume it adds nulls to a sweep"
        )]
        public string? Null { get; init; }

        [CommandOption("--steps-beta <BETA>")]
        [Description(
            "Scale the RL budget with β: grpo.max_steps is the budget at this β, and a point at β runs "
                + "max_steps·(BETA/β)^POWER steps; default: every β gets max_steps"
        )]
        public double? StepsBeta { get; init; }

        [CommandOption("--steps-power <POWER>")]
        [Description("The exponent of --steps-beta's scaling, >= 0 (default 1)")]
        public double? StepsPower { get; init; }

        [CommandOption("--config <FILE>")]
        [Description("Experiment config (JSON, snake_case keys), as for run")]
        public string? Config { get; init; }

        [CommandOption("--set <KEY=VALUE>")]
        [Description("Override a config value, e.g. grpo.max_steps=120 (repeatable)")]
        public string[] Set { get; init; } = [];

        [CommandOption("--seeds <N>")]
        [Description("Number of training seeds (default 3)")]
        public int? Seeds { get; init; }

        [CommandOption("--quick")]
        [Description("Small budgets and a two-point grid (CI)")]
        public bool Quick { get; init; }

        [CommandOption("--runs <DIR>")]
        [Description("Folder of run folders (default runs)")]
        public string? Runs { get; init; }

        [CommandOption("--resume <RUN_DIR>")]
        [Description(
            "Continue a killed sweep (finished points are not repeated) on its own config.json and grid.json; only "
                + "--null may go with it"
        )]
        public string? Resume { get; init; }

        public override ValidationResult Validate()
        {
            if (Preset is not null)
                return Refuse("--preset", RunPresetRefusal);
            if (Resume is not null && ResumeRefusal() is { } refused)
                return refused;
            if (StepsBeta is { } sb && !(double.IsFinite(sb) && sb > 0))
                return Refuse("--steps-beta", $"{sb} is not a β above 0");
            if (StepsPower is not null && StepsBeta is null)
                return Refuse("--steps-power", "it scales --steps-beta's budget; give --steps-beta too");
            if (StepsPower is { } sp && !(double.IsFinite(sp) && sp >= 0))
                return Refuse("--steps-power", $"{sp} is not a number >= 0");
            return base.Validate();
        }

        /// <summary>A resumed sweep runs the config.json and grid.json of its folder, so an option that would change
        /// either is refused by name, as run --resume refuses the options that would change its config. --null is
        /// honoured: it changes which points get a coin-reward null, and so adds nulls to a finished sweep.</summary>
        ValidationResult? ResumeRefusal()
        {
            const string config = "a resumed sweep uses its own config.json; start a new sweep to change it";
            const string grid = "a resumed sweep keeps its grid (grid.json); start a new sweep to change it";
            return RefuseFirstGiven(
                ("--config", Config is not null, config),
                ("--set", Set.Length > 0, config),
                ("--seeds", Seeds is not null, config),
                ("--model", Model is not null, config),
                ("--dtype", DType is not null, config),
                ("--device", Device is not null, config),
                (
                    "--quick",
                    Quick,
                    "a resumed sweep keeps its config.json and grid.json; start a new sweep to change them"
                ),
                ("--beta", Beta is not null, grid),
                ("--loose-format-fraction", LooseFormatFraction is not null, grid),
                ("--no-twin", NoTwin, grid),
                ("--steps-beta", StepsBeta is not null, grid),
                ("--steps-power", StepsPower is not null, grid),
                ("--runs", Runs is not null, "a resumed sweep stays in its folder, --resume RUN_DIR; drop --runs")
            );
        }
    }

    static string CheckNull(string v) =>
        SweepGrid.NullModes.Contains(v)
            ? v
            : throw new WorkbookException($"--null: '{v}' is not one of {string.Join(", ", SweepGrid.NullModes)}");

    public override int Execute(CommandContext context, Settings s)
    {
        ExperimentConfig cfg;
        SweepGrid grid;
        string runDir;
        if (s.Resume is not null)
        {
            if (
                !File.Exists(Path.Combine(s.Resume, "config.json")) || !File.Exists(Path.Combine(s.Resume, "grid.json"))
            )
                throw new WorkbookException($"{s.Resume}: not a sweep folder (no config.json and grid.json)");
            cfg = ExperimentConfig.Load(Path.Combine(s.Resume, "config.json"));
            grid = JsonSerializer.Deserialize<SweepGrid>(
                File.ReadAllText(Path.Combine(s.Resume, "grid.json")),
                TrainOptions.Json
            )!;
            runDir = s.Resume;
            if (s.Null is not null)
                grid = grid with { Null = CheckNull(s.Null) };
        }
        else
        {
            var betas = s.Beta is null
                ? (s.Quick ? [0.5] : SweepGrid.DefaultBetas)
                : SweepGrid.ParseList("--beta", s.Beta, 0, 1e6, minExclusive: true);
            var fractions = s.LooseFormatFraction is null
                ? (s.Quick ? [0.35, 0] : SweepGrid.DefaultFractions)
                : SweepGrid.ParseList("--loose-format-fraction", s.LooseFormatFraction, 0, 1, minExclusive: false);
            grid = new SweepGrid(
                betas,
                fractions,
                !s.NoTwin,
                CheckNull(s.Null ?? "all"),
                s.StepsBeta,
                s.StepsPower ?? 1
            );
            var overrides = s.Set.ToList();
            if (s.Seeds is { } n)
                overrides.Add($"seeds={n}");
            if (s.Model is not null)
                overrides.Add($"model={JsonSerializer.Serialize(s.Model)}");
            if (s.DType is not null)
                overrides.Add($"dtype={JsonSerializer.Serialize(s.DType)}");
            if (s.Device is not null)
                overrides.Add($"device={JsonSerializer.Serialize(s.Device)}");
            cfg = ExperimentConfig.Load(s.Config, overrides, Sweep.Start);
            if (s.Quick)
                cfg = cfg.Quick() with { Grpo = cfg.Quick().Grpo with { MaxSteps = 24 } };
            cfg.Validate();
            runDir = ExperimentRunner.NewRunDir(s.Runs ?? "runs", (s.Quick ? "quick-" : "") + "sweep");
        }
        try
        {
            return Run(cfg, grid, runDir);
        }
        catch
        {
            if (s.Resume is null)
                RunFolders.RemoveIfEmpty(runDir); // bad input (e.g. a dataset file) leaves no empty run folder
            throw;
        }
    }

    static int Run(ExperimentConfig cfg, SweepGrid grid, string runDir)
    {
        var sw = Stopwatch.StartNew();
        var runner = new ExperimentRunner(
            cfg,
            runDir,
            Path.GetDirectoryName(Path.GetFullPath(runDir))!,
            m => AnsiConsole.MarkupLineInterpolated($"[grey]{m}[/]")
        );
        Directory.CreateDirectory(runDir);
        var cfgPath = Path.Combine(runDir, "config.json");
        if (!File.Exists(cfgPath))
            AtomicFile.WriteAllText(cfgPath, cfg.ToJson());
        AnsiConsole.MarkupLineInterpolated($"[bold]run folder:[/] {runDir}");
        runner.OnMetrics += (stage, step, m) =>
        {
            if (m.ContainsKey("eval_sft_loss"))
            {
                var eval = MetricsLog.Format(m, "eval_sft_nll_per_response", runner.StrictKey);
                AnsiConsole.MarkupLineInterpolated($"  {stage} step {step}: {eval}  [grey]({sw.Elapsed:mm\\:ss})[/]");
            }
        };
        var sweep = Sweep.Run(runner, grid, m => AnsiConsole.MarkupLineInterpolated($"[grey]{m}[/]"));
        var html = SweepReport.Write(runDir, sweep);
        foreach (var st in sweep["statements"]!.AsArray())
            AnsiConsole.WriteLine(st!.GetValue<string>());
        AnsiConsole.MarkupLineInterpolated($"[bold]sweep:[/] {Path.Combine(runDir, "sweep.json")}");
        AnsiConsole.MarkupLineInterpolated($"[bold]report:[/] {html}  [grey](total {sw.Elapsed:mm\\:ss})[/]");
        return 0;
    }
}
