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

    /// <summary>Set to 1 to run bf16 on a CPU that lacks libtorch's fast bf16 matmul (see <see
    /// cref="CheckDTypeFast"/>).</summary>
    public const string AllowSlowBf16 = "WORKBOOK_ALLOW_SLOW_BF16";

    /// <summary>The x86 flags that libtorch's oneDNN bf16 matmul needs (its mkldnn_bf16_device_check: AVX-512 BW, VL
    /// and DQ) and this CPU lacks. Empty where it has them, and off x86 (not known there, so nothing is refused).
    /// /proc/cpuinfo is read first: the runtime's own flags can be switched off by DOTNET_EnableAVX512F.</summary>
    public static IReadOnlyList<string> MissingBf16Flags() =>
        MissingBf16Flags(CpuInfo("flags"), System.Runtime.Intrinsics.X86.X86Base.IsSupported);

    /// <summary><see cref="MissingBf16Flags()"/> from a cpuinfo "flags" value (null: ask the runtime).</summary>
    public static IReadOnlyList<string> MissingBf16Flags(string? cpuFlags, bool x86)
    {
        if (!x86)
            return [];
        if (cpuFlags is not null)
        {
            var have = cpuFlags.Split(' ', StringSplitOptions.RemoveEmptyEntries).ToHashSet();
            return Bf16Flags.Where(f => !have.Contains(f)).ToList();
        }
        bool[] runtime =
        [
            System.Runtime.Intrinsics.X86.Avx512BW.IsSupported,
            System.Runtime.Intrinsics.X86.Avx512BW.VL.IsSupported,
            System.Runtime.Intrinsics.X86.Avx512DQ.IsSupported,
        ];
        return Bf16Flags.Where((_, i) => !runtime[i]).ToList();
    }

    static readonly string[] Bf16Flags = ["avx512bw", "avx512vl", "avx512dq"];

    /// <summary>Refuses bf16 on a CPU without the flags of <see cref="MissingBf16Flags()"/>: libtorch then falls back
    /// to a reference bf16 matmul, measured 15-47 times slower than f32 (README, Platform notes), so a run would
    /// seem to hang. <paramref name="option"/> names what asked for bf16. <see cref="AllowSlowBf16"/>=1 runs it
    /// anyway; the library's own bf16 tests build models directly and are not refused.</summary>
    public static void CheckDTypeFast(ScalarType dtype, DeviceType device, string option) =>
        CheckDTypeFast(dtype, device, option, MissingBf16Flags(), Environment.GetEnvironmentVariable(AllowSlowBf16));

    public static void CheckDTypeFast(
        ScalarType dtype,
        DeviceType device,
        string option,
        IReadOnlyList<string> missing,
        string? allow
    )
    {
        if (dtype != ScalarType.BFloat16 || device != DeviceType.CPU || missing.Count == 0)
            return;
        if (allow?.Trim() == "1")
            return;
        if (allow is not null && allow.Trim() is not ("" or "0"))
            throw new WorkbookException($"{AllowSlowBf16}='{allow}': expected 1 (allow slow bf16) or 0");
        throw new WorkbookException(
            $"{option}: bf16 is refused on this CPU ({CpuInfo("model name") ?? "x86"}): it lacks "
                + $"{string.Join(", ", missing)}, which libtorch's fast bf16 matmul (oneDNN) needs, and its fallback "
                + "measured 15-47 times slower than f32 (README, Platform notes). Use f32, or set "
                + $"{AllowSlowBf16}=1 to run bf16 anyway"
        );
    }

    public static string Name(ScalarType t) =>
        t switch
        {
            ScalarType.Float32 => "f32",
            ScalarType.BFloat16 => "bf16",
            ScalarType.Float16 => "f16",
            _ => t.ToString(),
        };
}
