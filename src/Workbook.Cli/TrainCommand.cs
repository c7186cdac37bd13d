using System.ComponentModel;
using Spectre.Console;
using Spectre.Console.Cli;
using Workbook.Data;
using Workbook.Model;
using Workbook.Text;
using Workbook.Training;

namespace Workbook.Cli;

/// <summary>workbook train sft|grpo [--config FILE] [--model DIR|--preset NAME] [--dtype D] [--device D]
/// [--runs DIR | --run-dir RUN_DIR | --resume RUN_DIR]; the model options are <see cref="ModelSettings"/>'s.</summary>
public sealed class TrainCommand : Command<TrainCommand.Settings>
{
    public sealed class Settings : ModelSettings
    {
        [CommandArgument(0, "<TRAINER>")]
        [Description("sft or grpo")]
        public string Trainer { get; init; } = "";

        [CommandOption("--config <FILE>")]
        [Description("Trainer options (JSON, TRL names in snake_case)")]
        public string? Config { get; init; }

        [CommandOption("--set <KEY=VALUE>")]
        [Description("Override an option (repeatable)")]
        public string[] Set { get; init; } = [];

        [CommandOption("--dataset <SPEC>")]
        [Description("grammar (default), arithmetic, cola:FILE, gsm8k:FILE")]
        public string? Dataset { get; init; }

        [CommandOption("--train-size <N>")]
        [Description("Training examples to load or generate (default 3000)")]
        public int? TrainSize { get; init; }

        [CommandOption("--terse")]
        [Description("SFT on the terse answers (the base stage) instead of the expert responses")]
        public bool Terse { get; init; }

        [CommandOption("--skip-bad")]
        [Description("Skip bad data rows (counted and reported) instead of stopping")]
        public bool SkipBad { get; init; }

        [CommandOption("--runs <DIR>")]
        [Description("Folder of run folders (default runs; the run goes to <DIR>/<timestamp>-train-<trainer>)")]
        public string? Runs { get; init; }

        [CommandOption("--run-dir <RUN_DIR>")]
        [Description("Run folder to write instead of a new one under --runs")]
        public string? RunDir { get; init; }

        [CommandOption("--resume <RUN_DIR>")]
        [Description("Continue a run from its last checkpoint")]
        public string? Resume { get; init; }

        public override ValidationResult Validate()
        {
            if (Trainer is not ("sft" or "grpo"))
                return ValidationResult.Error($"unknown trainer '{Trainer}': expected sft or grpo");
            if (Terse && Trainer != "sft") // it picks SFT data; GRPO trains on the prompts either way
                return ValidationResult.Error("--terse is for sft only (it trains on the terse answers)");
            if (RunDir is not null && Resume is not null)
                return ValidationResult.Error("give --run-dir or --resume, not both");
            if (Runs is not null && RunDir is not null)
                return Refuse("--runs", "the run goes to its folder, --run-dir RUN_DIR; drop --runs");
            if (Runs is not null && Resume is not null)
                return Refuse("--runs", "a resumed run stays in its folder, --resume RUN_DIR; drop --runs");
            return base.Validate();
        }
    }

    public override int Execute(CommandContext context, Settings s)
    {
        if (s.Resume is not null && !Directory.Exists(s.Resume))
            throw new WorkbookException($"--resume {s.Resume}: run folder not found");
        if (s.RunDir is not null && File.Exists(s.RunDir))
            throw new WorkbookException($"--run-dir {s.RunDir}: a file, not a folder");
        // a resumed run uses the options it started with
        var config = s.Resume is not null ? Path.Combine(s.Resume, "options.json") : s.Config;
        // --dtype wins over the options' dtype (whose default is ModelSettings.DefaultDType, f32)
        var sets = s.DType is null ? s.Set : [.. s.Set, $"dtype={s.DType}"];
        TrainOptions opt =
            s.Trainer == "sft"
                ? TrainOptions.Load<SftOptions>(config, sets)
                : TrainOptions.Load<GrpoOptions>(config, sets);
        if (opt.LoggingSteps < 1)
            throw new WorkbookException($"option logging_steps: must be >= 1 (got {opt.LoggingSteps})");
        // before a run folder exists: bf16 on a CPU without its fast path would seem to hang
        Devices.CheckDTypeFast(
            Devices.ParseDType(opt.Dtype),
            Devices.Resolve(s.DeviceOrDefault).type,
            "dtype (--dtype or the options' dtype)"
        );
        var inputs = new Inputs(
            s.Trainer,
            s.Dataset ?? "grammar",
            s.Model,
            s.PresetOrDefault,
            s.TrainSize ?? 3000,
            s.Terse,
            s.SkipBad
        );
        if (s.Resume is not null && File.Exists(Path.Combine(s.Resume, InputsFile)))
            inputs = Resumed(s, Path.Combine(s.Resume, InputsFile));
        bool created = s.Resume is null && (s.RunDir is null || !Directory.Exists(s.RunDir));
        var dir = s.Resume ?? s.RunDir ?? RunFolders.Claim(s.Runs ?? "runs", $"train-{s.Trainer}");
        try
        {
            return Train(s, inputs, opt, dir);
        }
        catch
        {
            if (created)
                RunFolders.RemoveIfEmpty(dir);
            throw;
        }
    }

    /// <summary>What a run trains on, recorded in train.json so a resume continues the same run.</summary>
    public sealed record Inputs(
        string Trainer,
        string Dataset,
        string? Model,
        string? Preset,
        int TrainSize,
        bool Terse,
        bool SkipBad
    );

    const string InputsFile = "train.json";

    /// <summary>A resume uses the recorded inputs; an option given with a different value is refused (before anything
    /// in the run folder is rewritten).</summary>
    static Inputs Resumed(Settings s, string path)
    {
        Inputs rec;
        try
        {
            rec = System.Text.Json.JsonSerializer.Deserialize<Inputs>(File.ReadAllText(path), TrainOptions.Json)!;
        }
        catch (System.Text.Json.JsonException e)
        {
            throw new WorkbookException($"{path}: unreadable ({e.Message})");
        }
        void Same(string option, object? given, object? recorded)
        {
            if (given is not null && !Equals(given, recorded))
                throw new WorkbookException(
                    $"--resume {s.Resume}: the run was started with {option} {recorded ?? "(none)"}, not {given}; "
                        + "drop the option or start a new run"
                );
        }
        Same("trainer", s.Trainer, rec.Trainer);
        Same("--dataset", s.Dataset, rec.Dataset);
        Same("--model", s.Model, rec.Model);
        Same("--preset", s.Preset, rec.Preset);
        Same("--train-size", s.TrainSize, rec.TrainSize);
        if (s.Terse && !rec.Terse)
            Same("--terse", "--terse", "no --terse");
        if (s.SkipBad && !rec.SkipBad)
            Same("--skip-bad", "--skip-bad", "no --skip-bad");
        return rec;
    }

    static int Train(Settings s, Inputs w, TrainOptions opt, string dir)
    {
        RowReader.Skipped += Terminal.ReportSkipped;
        var task = TaskRegistry.Create(
            w.Dataset,
            0,
            new TaskOptions
            {
                TrainSize = w.TrainSize,
                EvalSize = 64,
                SkipBad = w.SkipBad,
            }
        );
        foreach (var note in task.Notes)
            AnsiConsole.MarkupLineInterpolated($"[grey]{note}[/]");
        // num_train_epochs (TRL's name) becomes max_steps now that the dataset size is known
        var data = w.Terse && s.Trainer == "sft" ? task.Base : task.Train;
        opt = opt.ResolveSteps(data.Count);
        var preset = w.Preset ?? ModelSettings.DefaultPreset;
        bool fullVocabulary = w.Model is null && preset.StartsWith("qwen3");
        var codec = ModelSetup.Codec(
            w.Model,
            task,
            fullVocabulary: fullVocabulary,
            log: m => AnsiConsole.MarkupLineInterpolated($"[grey]{m}[/]")
        );
        var vocab = codec.Vocab;
        var model = ModelSetup.Model(
            w.Model,
            v => Qwen3Config.Preset(preset, fullVocabulary ? null : v),
            vocab.Size,
            Devices.ParseDType(opt.Dtype),
            Devices.Resolve(s.DeviceOrDefault),
            opt.Seed
        );
        var ev = new Evaluator(
            codec,
            task.Eval,
            task.EvalVerifiers,
            new EvalOptions
            {
                MaxNewTokens = opt is GrpoOptions g ? g.MaxCompletionLength : 64,
                LossOnly = s.Trainer == "sft",
            }
        );
        var trainer = Trainers.Create(opt, model, codec, data, task.Reward, dir, ev);
        Theory.GradientAlignment.AttachIfAsked(trainer, opt);
        // written once the inputs are known to be good (the trainer validated its options): a failure leaves nothing
        Directory.CreateDirectory(dir);
        vocab.Save(Path.Combine(dir, "vocab.json"));
        if (s.Resume is null)
            AtomicFile.WriteAllText(
                Path.Combine(dir, InputsFile),
                System.Text.Json.JsonSerializer.Serialize(w, TrainOptions.Json)
            );
        long parameters = model.ParameterCount();
        AnsiConsole.MarkupLineInterpolated(
            $"[bold]run folder:[/] {dir}  [grey]({parameters:N0} parameters, {task.Name}, {opt.MaxSteps} steps)[/]"
        );
        string[] keys =
            s.Trainer == "sft"
                ? ["loss", "mean_token_accuracy", "grad_norm", "learning_rate", "eval_sft_loss"]
                :
                [
                    "reward",
                    "reward_std",
                    "frac_reward_zero_std",
                    "kl",
                    "entropy",
                    "completions/mean_length",
                    "eval_sft_loss",
                    $"eval_rewards/{task.Reward.Name}/mean",
                ];
        // a progress line every logging_steps steps (a live bar on a terminal, plain lines otherwise); evaluations
        // always
        var sw = System.Diagnostics.Stopwatch.StartNew();
        string Line(long step, IReadOnlyDictionary<string, double> m) =>
            $"{s.Trainer} step {step}/{opt.MaxSteps}  {MetricsLog.Format(m, keys)}";
        void Eval(long step, IReadOnlyDictionary<string, double> m) =>
            AnsiConsole.MarkupLineInterpolated(
                $"[grey]eval @ {step}:[/] {MetricsLog.Format(m, m.Keys.Where(k => k.StartsWith("eval_")).ToArray())}"
            );
        bool IsEval(IReadOnlyDictionary<string, double> m) => m.Keys.Any(k => k.StartsWith("eval_"));
        if (!Terminal.Interactive)
        {
            trainer.OnLog +=
                (Action<long, IReadOnlyDictionary<string, double>>)(
                    (step, m) =>
                    {
                        if (IsEval(m))
                            Eval(step, m);
                        else if (step % opt.LoggingSteps == 0 || step == opt.MaxSteps)
                            Console.WriteLine($"{Line(step, m)}  ({sw.Elapsed:mm\\:ss})");
                    }
                );
            trainer.Train(s.Resume is not null);
        }
        else
            AnsiConsole
                .Progress()
                .AutoClear(false)
                .HideCompleted(false)
                .Columns(
                    new TaskDescriptionColumn { Alignment = Justify.Left },
                    new ProgressBarColumn(),
                    new PercentageColumn(),
                    new ElapsedTimeColumn(),
                    new RemainingTimeColumn()
                )
                .Start(ctx =>
                {
                    var bar = ctx.AddTask($"{s.Trainer} step 0/{opt.MaxSteps}", maxValue: Math.Max(1, opt.MaxSteps));
                    Action<long, IReadOnlyDictionary<string, double>> show = (step, m) =>
                    {
                        if (IsEval(m))
                        {
                            Eval(step, m);
                            return;
                        }
                        bar.Value = step;
                        if (step % opt.LoggingSteps == 0 || step == opt.MaxSteps)
                            bar.Description = Markup.Escape(Line(step, m));
                    };
                    trainer.OnLog += show;
                    trainer.Train(s.Resume is not null);
                    bar.Value = bar.MaxValue;
                });
        var metrics = Path.Combine(dir, "metrics.jsonl");
        AnsiConsole.MarkupLineInterpolated(
            $"[bold]done:[/] metrics {metrics}, last checkpoint {TrainerCheckpoint.Latest(dir)}"
        );
        if (trainer is GrpoTrainer stopper && stopper.KeepBestAtEnd())
        {
            stopper.DropBestCandidates();
            var at = opt is GrpoOptions { StopRestoreBest: true } ? stopper.BestStep : stopper.StoppedAt;
            AnsiConsole.MarkupLineInterpolated(
                $"stop rule: the stage's result is {Path.Combine(dir, GrpoTrainer.StoppedModelDir)} (step {at})"
            );
        }
        return 0;
    }
}
