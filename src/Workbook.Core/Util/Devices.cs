using TorchSharp;
using static TorchSharp.torch;

namespace Workbook;

/// <summary>Device and dtype choice from user strings. "auto" picks CUDA only when a CUDA build of TorchSharp finds a
/// GPU.</summary>
public static class Devices
{
    public static Device Resolve(string? name)
    {
        switch ((name ?? "auto").Trim().ToLowerInvariant())
        {
            case "auto":
                return cuda.is_available() ? CUDA : CPU;
            case "cpu":
                return CPU;
            case "cuda":
                if (!cuda.is_available())
                    throw new WorkbookException(
                        "--device cuda: no CUDA device is available (this build uses the CPU libtorch unless built "
                            + "with -p:TorchBackend=cuda, and a GPU must be present). Use --device cpu or auto."
                    );
                return CUDA;
            default:
                throw new WorkbookException($"unknown device '{name}': expected cpu, cuda or auto");
        }
    }

    public static ScalarType ParseDType(string? name) =>
        (name ?? "f32").Trim().ToLowerInvariant() switch
        {
            "f32" or "float32" or "fp32" => ScalarType.Float32,
            "bf16" or "bfloat16" => ScalarType.BFloat16,
            "f16" or "float16" or "fp16" => throw new WorkbookException(
                "dtype f16 is refused: libtorch has no fast float16 path on CPU (about 1000x slower than f32); use "
                    + "bf16 or f32"
            ),
            _ => throw new WorkbookException($"unknown dtype '{name}': expected f32 or bf16"),
        };

    public static string Name(ScalarType t) =>
        t switch
        {
            ScalarType.Float32 => "f32",
            ScalarType.BFloat16 => "bf16",
            ScalarType.Float16 => "f16",
            _ => t.ToString(),
        };
}
