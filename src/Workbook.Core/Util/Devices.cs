using TorchSharp;
using static TorchSharp.torch;

namespace Workbook;

/// <summary>Device and dtype choice from user strings. "auto" picks CUDA only when a CUDA build of TorchSharp finds a
/// GPU.</summary>
public static class Devices
{
    /// <summary>The CPU's model and widest vector unit, e.g. "AMD EPYC (avx512f)". oneMKL and libtorch pick kernels
    /// by the vector unit, and kernels round differently: GRPO samples its tokens, so on another CPU kind the same
    /// seed is another draw. versions.json records it so that runs compared seed for seed are known to be
    /// comparable.</summary>
    public static string CpuKind()
    {
        string isa =
            System.Runtime.Intrinsics.X86.Avx512F.IsSupported ? "avx512f"
            : System.Runtime.Intrinsics.X86.Avx2.IsSupported ? "avx2"
            : System.Runtime.Intrinsics.Arm.AdvSimd.IsSupported ? "neon"
            : "no avx2";
        // the architecture name stands in where the kernel gives no model name
        string name =
            CpuInfo("model name") ?? System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture.ToString();
        return $"{name} ({isa})";
    }

    /// <summary>The value of the first "key : value" line of /proc/cpuinfo with this key, or null (no such line, no
    /// such file, or not readable).</summary>
    public static string? CpuInfo(string key)
    {
        try
        {
            return File.Exists("/proc/cpuinfo")
                ? File.ReadLines("/proc/cpuinfo")
                    .FirstOrDefault(l => l.StartsWith(key, StringComparison.Ordinal))
                    ?.Split(':', 2)[1]
                    .Trim()
                : null;
        }
        catch (IOException)
        {
            return null;
        }
    }

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
