using Spectre.Console;
using Spectre.Console.Cli;
using Workbook.Data;
using Workbook.Experiments;
using Workbook.Model;
using Workbook.Training;
using static TorchSharp.torch;

namespace Workbook.Cli;

public sealed class InfoCommand : Command
{
    public override int Execute(CommandContext context)
    {
        AnsiConsole.MarkupLineInterpolated(
            $"workbook {typeof(Qwen3Config).Assembly.GetName().Version} on .NET {Environment.Version}"
        );
        var torchSharp = typeof(TorchSharp.torch).Assembly.GetName().Version;
        AnsiConsole.MarkupLineInterpolated(
            $"TorchSharp {torchSharp}; cuda available: {cuda.is_available()}; threads: {get_num_threads()}"
        );
        var t = new Table().AddColumns("model", "layers", "hidden", "heads/kv", "head_dim", "vocab", "parameters");
        void Row(string name, Qwen3Config c) =>
            t.AddRow(
                Markup.Escape(name),
                c.NumHiddenLayers.ToString(),
                c.HiddenSize.ToString(),
                $"{c.NumAttentionHeads}/{c.NumKeyValueHeads}",
                c.HeadDim.ToString(),
                c.VocabSize.ToString(),
                c.ParameterCount().ToString("N0")
            );
        // the main job's model: the default experiment config's shape over the default task's vocabulary
        var cfg = new ExperimentConfig();
        try
        {
            var tok = ModelSetup.Tokenizer(null, m => Console.Error.WriteLine(m));
            var vocab = ModelSetup.Vocabulary(tok, null, TaskRegistry.Create(cfg.Dataset, cfg.DatasetSeed, cfg.Task));
            Row("run (main job, default)", cfg.ModelConfig(vocab.Size));
        }
        catch (WorkbookException e)
        {
            Console.Error.WriteLine($"main job's model: vocabulary unknown ({e.Message})");
        }
        foreach (var name in new[] { "tiny", "small", "qwen3-0.6b" })
            Row($"--preset {name}", Qwen3Config.Preset(name));
        AnsiConsole.Write(t);
        return 0;
    }
}
