using System.ComponentModel;
using System.Text.Json;
using Spectre.Console.Cli;
using Workbook.Model;
using static TorchSharp.torch;

namespace Workbook.Cli;

public class ModelSettings : CommandSettings
{
    [CommandOption("--model <DIR>")]
    [Description("Hugging Face model folder (config.json + model.safetensors)")]
    public string? Model { get; init; }

    [CommandOption("--preset <NAME>")]
    [Description("Random-init preset instead of a folder: qwen3-0.6b, small, tiny")]
    public string? Preset { get; init; }

    [CommandOption("--seed <N>")]
    [Description("Seed (random init and sampling)")]
    [DefaultValue(0L)]
    public long Seed { get; init; }

    [CommandOption("--dtype <DTYPE>")]
    [Description("Compute dtype: f32 or bf16")]
    [DefaultValue("f32")]
    public string DType { get; init; } = "f32";

    [CommandOption("--device <DEVICE>")]
    [Description("cpu, cuda or auto")]
    [DefaultValue("auto")]
    public string Device { get; init; } = "auto";

    [CommandOption("--ids <IDS>")]
    [Description("Comma-separated token ids")]
    public string? Ids { get; init; }

    [CommandOption("--tokenizer <DIR_OR_FILE>")]
    [Description("tokenizer.json (or its folder); default: the model folder, else the cached Qwen3 tokenizer")]
    public string? Tokenizer { get; init; }

    [CommandOption("--json")]
    [Description("Machine-readable JSON output")]
    public bool Json { get; init; }

    public override Spectre.Console.ValidationResult Validate()
    {
        if (Model is null == Preset is null)
            return Spectre.Console.ValidationResult.Error("give exactly one of --model DIR or --preset NAME");
        return base.Validate();
    }

    public Qwen3ForCausalLM LoadModel()
    {
        var dtype = Devices.ParseDType(DType);
        var device = Devices.Resolve(Device);
        if (Model is not null)
            return Checkpoint.Load(Model, dtype, device);
        return new Qwen3ForCausalLM(Qwen3Config.Preset(Preset!), dtype, device, Seed);
    }

    public Workbook.Text.Qwen3Tokenizer LoadTokenizer()
    {
        if (Tokenizer is not null)
            return Workbook.Text.Qwen3Tokenizer.Load(Tokenizer);
        if (Model is not null && File.Exists(Path.Combine(Model, "tokenizer.json")))
            return Workbook.Text.Qwen3Tokenizer.Load(Model);
        return Workbook.Text.Qwen3Tokenizer.Load(
            Workbook.Text.TokenizerFiles.EnsureDefault(m => Console.Error.WriteLine(m))
        );
    }

    public static int[] ParseIds(string s, string option)
    {
        try
        {
            return s.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(int.Parse)
                .ToArray();
        }
        catch (FormatException)
        {
            throw new WorkbookException($"{option}: expected comma-separated integers, got '{s}'");
        }
        catch (OverflowException)
        {
            throw new WorkbookException($"{option}: id out of range in '{s}'");
        }
    }

    public static readonly JsonSerializerOptions JsonOut = new()
    {
        WriteIndented = false,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };
}
