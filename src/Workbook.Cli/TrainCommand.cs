using System.ComponentModel;
using Spectre.Console;
using Spectre.Console.Cli;
using Workbook.Data;
using Workbook.Model;
using Workbook.Text;
using Workbook.Training;

namespace Workbook.Cli;

/// <summary>workbook train sft|grpo --config FILE [--model DIR|--preset NAME] [--out RUN_DIR] [--resume RUN_DIR]</summary>
public sealed class TrainCommand : Command<TrainCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandArgument(0, "<TRAINER>")][Description("sft or grpo")] public string Trainer { get; init; } = "";
        [CommandOption("--config <FILE>")][Description("Trainer options (JSON, TRL names in snake_case)")] public string? Config { get; init; }
        [CommandOption("--set <KEY=VALUE>")][Description("Override an option (repeatable)")] public string[] Set { get; init; } = [];
        [CommandOption("--model <DIR>")][Description("Hugging Face Qwen3 folder to start from")] public string? Model { get; init; }
        [CommandOption("--preset <NAME>")][Description("Random-init model: tiny, small (task vocabulary) or qwen3-0.6b")] public string? Preset { get; init; }
        [CommandOption("--dataset <SPEC>")][Description("grammar (default), arithmetic, cola:FILE, gsm8k:FILE")][DefaultValue("grammar")] public string Dataset { get; init; } = "grammar";
        [CommandOption("--train-size <N>")][DefaultValue(3000)] public int TrainSize { get; init; } = 3000;
        [CommandOption("--terse")][Description("SFT on the terse answers (the base stage) instead of the expert responses")] public bool Terse { get; init; }
        [CommandOption("--skip-bad")] public bool SkipBad { get; init; }
        [CommandOption("--device <DEVICE>")][DefaultValue("auto")] public string Device { get; init; } = "auto";
        [CommandOption("--out <RUN_DIR>")][Description("Run folder (default runs/<timestamp>-train-<trainer>)")] public string? Out { get; init; }
        [CommandOption("--resume <RUN_DIR>")][Description("Continue a run from its last checkpoint")] public string? Resume { get; init; }

        public override ValidationResult Validate()
        {
            if (Trainer is not ("sft" or "grpo")) return ValidationResult.Error($"unknown trainer '{Trainer}': expected sft or grpo");
            if (Model is not null && Preset is not null) return ValidationResult.Error("give at most one of --model and --preset");
            if (Out is not null && Resume is not null) return ValidationResult.Error("give --out or --resume, not both");
            return ValidationResult.Success();
        }
    }

    public override int Execute(CommandContext context, Settings s)
    {
        var dir = s.Resume ?? s.Out ?? Workbook.Experiments.ExperimentRunner.NewRunDir("runs", $"train-{s.Trainer}");
        if (s.Resume is not null && !Directory.Exists(s.Resume)) throw new WorkbookException($"--resume {s.Resume}: run folder not found");
        // a resumed run uses the options it started with
        var config = s.Resume is not null ? Path.Combine(s.Resume, "options.json") : s.Config;
        TrainOptions opt = s.Trainer == "sft" ? TrainOptions.Load<SftOptions>(config, s.Set) : TrainOptions.Load<GrpoOptions>(config, s.Set);
        var task = TaskRegistry.Create(s.Dataset, 0, new TaskOptions { TrainSize = s.TrainSize, EvalSize = 64, SkipBad = s.SkipBad });
        foreach (var note in task.Notes) AnsiConsole.MarkupLineInterpolated($"[grey]{note}[/]");
        // num_train_epochs (TRL's name) becomes max_steps now that the dataset size is known
        opt = opt.ResolveSteps(s.Terse ? task.Base.Count : task.Train.Count);
        var tok = s.Model is not null && File.Exists(Path.Combine(s.Model, "tokenizer.json")) ? Qwen3Tokenizer.Load(s.Model)
            : Qwen3Tokenizer.Load(TokenizerFiles.EnsureDefault(m => AnsiConsole.MarkupLineInterpolated($"[grey]{m}[/]")));
        var dtype = Devices.ParseDType(opt.Dtype);
        var device = Devices.Resolve(s.Device);
        Qwen3ForCausalLM model;
        TaskVocabulary vocab;
        if (s.Model is not null)
        {
            model = Checkpoint.Load(s.Model, dtype, device);
            // a checkpoint of a compact-vocabulary model (train sft --preset tiny) carries its vocab.json: stages chain
            vocab = ModelVocabulary.For(s.Model, model.Config.VocabSize);
            if (vocab.Size < ModelVocabulary.QwenVocabSize)
            {
                var missing = task.Train.Concat(task.Eval)
                    .SelectMany(e => ChatTemplate.Tokenize(tok, [.. e.Prompt, ChatMessage.Assistant(e.Expert)], false, false).Ids)
                    .Where(id => !vocab.Contains(id)).Distinct().Take(5).Select(i => $"{i} '{tok.Decode([i])}'").ToList();
                if (missing.Count > 0)
                    throw new WorkbookException($"{s.Model}: the model's compact vocabulary lacks token(s) {string.Join(", ", missing)} " +
                        $"that the dataset '{s.Dataset}' uses; a compact-vocabulary model only knows the task it was built for");
            }
        }
        else
        {
            var preset = s.Preset ?? "tiny";
            vocab = preset.StartsWith("qwen3") ? TaskVocabulary.Identity(151936) : TaskVocabulary.Build(tok, task);
            model = new Qwen3ForCausalLM(Qwen3Config.Preset(preset, preset.StartsWith("qwen3") ? null : vocab.Size), dtype, device, opt.Seed);
        }
        Directory.CreateDirectory(dir);
        vocab.Save(Path.Combine(dir, "vocab.json"));
        var codec = new Codec(tok, vocab);
        var ev = new Evaluator(codec, task.Eval, task.EvalVerifiers, new EvalOptions
        {
            MaxNewTokens = opt is GrpoOptions g ? g.MaxCompletionLength : 64, LossOnly = s.Trainer == "sft",
        });
        dynamic trainer = opt switch
        {
            SftOptions so => new SftTrainer(model, codec, s.Terse ? task.Base : task.Train, so, dir, ev),
            GrpoOptions go => new GrpoTrainer(model, codec, task.Train, task.Reward, go, dir, ev),
            _ => throw new InvalidOperationException(),
        };
        AnsiConsole.MarkupLineInterpolated($"[bold]run folder:[/] {dir}  [grey]({model.ParameterCount():N0} parameters, {task.Name}, {opt.MaxSteps} steps)[/]");
        string[] keys = s.Trainer == "sft" ? ["loss", "mean_token_accuracy", "grad_norm", "learning_rate", "eval_sft_loss"]
            : ["reward", "reward_std", "frac_reward_zero_std", "kl", "entropy", "completions/mean_length", "eval_sft_loss", $"eval_rewards/{task.Reward.Name}/mean"];
        // a progress bar with the key numbers; evaluation lines are printed above it
        AnsiConsole.Progress().AutoClear(false).HideCompleted(false)
            .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                var bar = ctx.AddTask($"{s.Trainer} step 0/{opt.MaxSteps}", maxValue: Math.Max(1, opt.MaxSteps));
                Action<long, IReadOnlyDictionary<string, double>> show = (step, m) =>
                {
                    if (m.Keys.Any(k => k.StartsWith("eval_"))) { AnsiConsole.MarkupLineInterpolated($"[grey]eval @ {step}:[/] {MetricsLog.Format(m, m.Keys.Where(k => k.StartsWith("eval_")).ToArray())}"); return; }
                    bar.Value = step;
                    bar.Description = Markup.Escape($"{s.Trainer} step {step}/{opt.MaxSteps}  {MetricsLog.Format(m, keys)}");
                };
                trainer.OnLog += show;
                trainer.Train(s.Resume is not null);
                bar.Value = bar.MaxValue;
            });
        AnsiConsole.MarkupLineInterpolated($"[bold]done:[/] metrics {Path.Combine(dir, "metrics.jsonl")}, last checkpoint {TrainerCheckpoint.Latest(dir)}");
        return 0;
    }
}
