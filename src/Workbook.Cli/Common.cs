using System.ComponentModel;
using System.Text.Json;
using Spectre.Console.Cli;
using Workbook.Data;
using Workbook.Model;
using Workbook.Training;
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

    public Qwen3ForCausalLM LoadModel() =>
        ModelSetup.Model(
            Model,
            _ => Qwen3Config.Preset(Preset!),
            ModelVocabulary.QwenVocabSize, // a preset keeps its own (Qwen3's) vocabulary
            Devices.ParseDType(DType),
            Devices.Resolve(Device),
            Seed
        );

    public Workbook.Text.Qwen3Tokenizer LoadTokenizer() =>
        ModelSetup.Tokenizer(Model, m => Console.Error.WriteLine(m), Tokenizer);

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
