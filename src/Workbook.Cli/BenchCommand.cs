using System.ComponentModel;
using System.Text.Json;
using Spectre.Console;
using Spectre.Console.Cli;
using Workbook.Bench;
using Workbook.Data;
using Workbook.Model;
using Workbook.Text;
using Workbook.Training;

namespace Workbook.Cli;

public sealed class BenchCommand : Command<BenchCommand.Settings>
{
    public sealed class Settings : CommandSettings
    {
        [CommandArgument(0, "<WHAT>")][Description("train, generate, tokenizer or all")] public string What { get; init; } = "";
        [CommandOption("--preset <NAME>")][Description("small (default: 4 layers, hidden 256, vocab 4096), tiny, qwen3-0.6b")][DefaultValue("small")] public string Preset { get; init; } = "small";
        [CommandOption("--dtype <DTYPE>")][DefaultValue("bf16")] public string DType { get; init; } = "bf16";
        [CommandOption("--batch <N>")][DefaultValue(8)] public int Batch { get; init; } = 8;
        [CommandOption("--seq <N>")][DefaultValue(256)] public int Seq { get; init; } = 256;
        [CommandOption("--steps <N>")][Description("Timed SFT steps")][DefaultValue(10)] public int Steps { get; init; } = 10;
        [CommandOption("--memory-steps <N>")][Description("Extra steps to measure RSS growth (0 = skip)")][DefaultValue(0)] public int MemorySteps { get; init; }
        [CommandOption("--text <FILE>")][Description("tokenizer: also measure on this text file")] public string? Text { get; init; }
        [CommandOption("--out <FILE>")][Description("Also write the JSON here (atomically)")] public string? Out { get; init; }
        [CommandOption("--json")] public bool Json { get; init; }
        public override ValidationResult Validate() => What is "train" or "generate" or "tokenizer" or "all" ? ValidationResult.Success() : ValidationResult.Error("expected train, generate, tokenizer or all");
    }

    public override int Execute(CommandContext context, Settings s)
    {
        var dtype = Devices.ParseDType(s.DType);
        var cfg = Qwen3Config.Preset(s.Preset);
        var r = new Dictionary<string, object>
        {
            ["preset"] = s.Preset, ["dtype"] = Devices.Name(dtype), ["batch"] = s.Batch, ["seq"] = s.Seq,
            ["parameters"] = cfg.ParameterCount(), ["threads"] = TorchSharp.torch.get_num_threads(), ["versions"] = Experiments.ExperimentRunner.Versions(),
        };
        if (s.What is "train" or "all")
        {
            foreach (var (k, v) in Benchmarks.Train(cfg, dtype, s.Batch, s.Seq, s.Steps, s.MemorySteps)) r[k] = v;
            var tok = Qwen3Tokenizer.Load(TokenizerFiles.EnsureDefault());
            var task = TaskRegistry.Create("grammar", 0, new TaskOptions { TrainSize = 500, EvalSize = 8 });
            var codec = new Codec(tok, TaskVocabulary.Build(tok, task));
            foreach (var (k, v) in Benchmarks.Grpo(Qwen3Config.Small(codec.Vocab.Size), dtype, codec, task, 4)) r[k] = v;
        }
        if (s.What is "generate" or "all") foreach (var (k, v) in Benchmarks.Generate(cfg, dtype)) r[k] = v;
        if (s.What is "tokenizer" or "all") foreach (var (k, v) in Benchmarks.Tokenizer(TokenizerFiles.EnsureDefault(), s.Text)) r[k] = v;
        var json = JsonSerializer.Serialize(r, new JsonSerializerOptions { WriteIndented = true });
        if (s.Out is not null) AtomicFile.WriteAllText(s.Out, json);
        if (s.Json) Console.WriteLine(json);
        else foreach (var (k, v) in r.Where(kv => kv.Key != "versions")) AnsiConsole.MarkupLineInterpolated($"{k,-38} {(v is double d ? d.ToString("G4") : v)}");
        return 0;
    }
}
