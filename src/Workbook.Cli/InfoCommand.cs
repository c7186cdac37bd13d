using Spectre.Console;
using Spectre.Console.Cli;
using Workbook.Model;
using static TorchSharp.torch;

namespace Workbook.Cli;

public sealed class InfoCommand : Command
{
    public override int Execute(CommandContext context)
    {
        AnsiConsole.MarkupLineInterpolated($"workbook {typeof(Qwen3Config).Assembly.GetName().Version} on .NET {Environment.Version}");
        AnsiConsole.MarkupLineInterpolated($"TorchSharp {typeof(TorchSharp.torch).Assembly.GetName().Version}; cuda available: {cuda.is_available()}; threads: {get_num_threads()}");
        var t = new Table().AddColumns("preset", "layers", "hidden", "heads/kv", "head_dim", "vocab", "parameters");
        foreach (var name in new[] { "tiny", "small", "qwen3-0.6b" })
        {
            var c = Qwen3Config.Preset(name);
            t.AddRow(name, c.NumHiddenLayers.ToString(), c.HiddenSize.ToString(), $"{c.NumAttentionHeads}/{c.NumKeyValueHeads}", c.HeadDim.ToString(), c.VocabSize.ToString(), c.ParameterCount().ToString("N0"));
        }
        AnsiConsole.Write(t);
        return 0;
    }
}
