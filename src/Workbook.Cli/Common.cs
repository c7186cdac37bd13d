using System.ComponentModel;
using System.Text.Json;
using Spectre.Console;
using Spectre.Console.Cli;
using Workbook.Data;
using Workbook.Model;
using Workbook.Training;
using static TorchSharp.torch;

namespace Workbook.Cli;

/// <summary>The model options of every verb that loads a model (train, run, sweep, bench, generate, score), with one
/// meaning and one set of defaults: <c>--model DIR</c> or <c>--preset NAME</c> (neither: <see cref="DefaultPreset"/>),
/// <c>--dtype</c> (default <see cref="DefaultDType"/>) and <c>--device</c> (default <see cref="DefaultDevice"/>). A
/// verb that cannot honour one of them refuses it by name in its Validate (<see cref="Refuse"/>); none is ignored.
/// </summary>
public class ModelSettings : CommandSettings
{
    public const string DefaultPreset = "tiny";
    public const string DefaultDType = "f32";
    public const string DefaultDevice = "auto";

    /// <summary>Why run and sweep refuse --preset.</summary>
    public const string RunPresetRefusal =
        "without --model the experiment trains the config's own small model (hidden_size, num_hidden_layers, ... "
        + "in --config or --set) from scratch; give --model DIR to start from a folder";

    [CommandOption("--model <DIR>")]
    [Description("Hugging Face Qwen3 folder (config.json + model.safetensors) or a workbook checkpoint")]
    public string? Model { get; init; }

    [CommandOption("--preset <NAME>")]
    [Description("Random-init model instead of a folder: tiny (default), small or qwen3-0.6b")]
    public string? Preset { get; init; }

    [CommandOption("--dtype <DTYPE>")]
    [Description("Compute dtype: f32 (default) or bf16")]
    public string? DType { get; init; }

    [CommandOption("--device <DEVICE>")]
    [Description("cpu, cuda or auto (default: cuda when a GPU is present, else cpu)")]
    public string? Device { get; init; }

    /// <summary>The preset to build: the one given, else <see cref="DefaultPreset"/>; null with --model.</summary>
    public string? PresetOrDefault => Model is null ? Preset ?? DefaultPreset : null;

    public string DTypeOrDefault => DType ?? DefaultDType;

    public string DeviceOrDefault => Device ?? DefaultDevice;

    public override ValidationResult Validate()
    {
        if (Model is not null && Preset is not null)
            return ValidationResult.Error("give at most one of --model DIR and --preset NAME");
        if (Preset is not null && !IsPreset(Preset))
            return Refuse("--preset", $"unknown preset '{Preset}': expected tiny, small or qwen3-0.6b");
        if (DType is not null)
            try
            {
                Devices.ParseDType(DType);
            }
            catch (WorkbookException e)
            {
                return Refuse("--dtype", e.Message);
            }
        if (Device is not null && Device.Trim().ToLowerInvariant() is not ("cpu" or "cuda" or "auto"))
            return Refuse("--device", $"unknown device '{Device}': expected cpu, cuda or auto");
        return base.Validate();
    }

    static bool IsPreset(string name)
    {
        try
        {
            Qwen3Config.Preset(name);
            return true;
        }
        catch (WorkbookException)
        {
            return false;
        }
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

    /// <summary>The error of an option this verb (or this case of it) cannot honour: "OPTION: why".</summary>
    protected static ValidationResult Refuse(string option, string why) => ValidationResult.Error($"{option}: {why}");

    /// <summary>The refusal of the first given option of a table (option, given, why), or null: how a resumed run
    /// or sweep names the option that would change what it resumes.</summary>
    protected static ValidationResult? RefuseFirstGiven(params (string Option, bool Given, string Why)[] options) =>
        options.FirstOrDefault(o => o.Given) is { Option: not null } o ? Refuse(o.Option, o.Why) : null;
}

/// <summary>The options of the verbs that feed token ids through one model (score, generate).</summary>
public class ModelIdsSettings : ModelSettings
{
    [CommandOption("--seed <N>")]
    [Description("Seed (random init and sampling)")]
    [DefaultValue(0L)]
    public long Seed { get; init; }

    [CommandOption("--ids <IDS>")]
    [Description("Comma-separated token ids")]
    public string? Ids { get; init; }

    [CommandOption("--tokenizer <DIR_OR_FILE>")]
    [Description("tokenizer.json (or its folder); default: the model folder, else the cached Qwen3 tokenizer")]
    public string? Tokenizer { get; init; }

    [CommandOption("--json")]
    [Description("Machine-readable JSON output")]
    public bool Json { get; init; }

    /// <summary>The folder's model, or the preset at Qwen3's full vocabulary (its ids are Qwen3 ids).</summary>
    public Qwen3ForCausalLM LoadModel()
    {
        var (dtype, device) = (Devices.ParseDType(DTypeOrDefault), Devices.Resolve(DeviceOrDefault));
        Devices.CheckDTypeFast(dtype, device.type, "--dtype");
        return ModelSetup.Model(
            Model,
            _ => Qwen3Config.Preset(PresetOrDefault!),
            ModelVocabulary.QwenVocabSize, // a preset keeps its own (Qwen3's) vocabulary
            dtype,
            device,
            Seed
        );
    }

    public Workbook.Text.Qwen3Tokenizer LoadTokenizer() =>
        ModelSetup.Tokenizer(Model, m => Console.Error.WriteLine(m), Tokenizer);
}
