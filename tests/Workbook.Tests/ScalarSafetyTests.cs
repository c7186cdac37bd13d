using System.Reflection;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;
using Microsoft.CodeAnalysis.CSharp.Syntax;
using static TorchSharp.torch;

namespace Workbook.Tests;

/// <summary>An implicit TorchSharp Scalar is unreachable once its handle is read, so a GC on another thread may
/// finalize it while the native call still reads it: a garbage value, or a crash (a test host died with a jump to
/// address 1 in a thread-pool thread). This finds, in every project's source, (1) a number converted to a Scalar
/// anywhere but a named declaration or assignment, and (2) a call of a TorchSharp method that makes such a Scalar
/// itself (t + u passes alpha 1, t / 2 converts the 2), found from TorchSharp's own IL. HeldScalars has the
/// replacements. A line may opt out with the comment "scalar-safety: on purpose".</summary>
public class ScalarSafetyTests
{
    const string OptOut = "scalar-safety: on purpose";

    [Theory]
    [InlineData("src/Workbook.Core", "Workbook.Core")]
    [InlineData("src/Workbook.Cli", "workbook")]
    [InlineData("tools/Workbook.Bench", "Workbook.Bench")]
    [InlineData("tools/Workbook.Notebooks", "Workbook.Notebooks")]
    [InlineData("tests/Workbook.Tests", "Workbook.Tests")]
    public void No_call_hands_libtorch_an_implicit_scalar(string folder, string assembly)
    {
        var sites = ImplicitScalarSites(Path.Combine(TestData.RepoRoot, folder), assembly);
        Assert.True(sites.Count == 0, $"{sites.Count} site(s):\n" + string.Join("\n", sites));
    }

    [Fact]
    public void The_check_finds_the_kinds_of_site_it_is_for()
    {
        // a folder with one file of known sites, compiled like the real ones: the check itself can fail
        var dir = Directory.CreateTempSubdirectory("scalar-safety-").FullName;
        try
        {
            File.WriteAllText(
                Path.Combine(dir, "Sites.cs"),
                """
                using TorchSharp;
                using static TorchSharp.torch;
                static class Sites
                {
                    static Tensor A(Tensor t, Tensor u) => t + u;
                    static Tensor B(Tensor t) => t / 2;
                    static Tensor C(Tensor t) => t.clamp_min(0.5);
                    static Tensor D(Tensor t) { using Scalar h = 0.5; return t.clamp_min(h); }
                    static Tensor E(Tensor t, Tensor u) => t.add(u, HeldScalars.One);
                    static Tensor F(Tensor t) => t / 2; // scalar-safety: on purpose
                }
                """
            );
            var sites = ImplicitScalarSites(dir, "Sites");
            Assert.Equal(3, sites.Count);
            Assert.Contains(sites, s => s.Contains(":5:") && s.Contains("op_Addition"));
            Assert.Contains(sites, s => s.Contains(":6:") && s.Contains("op_Division"));
            Assert.Contains(sites, s => s.Contains(":7:") && s.Contains("0.5"));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    /// <summary>"file:line: what" for every site in the folder's source.</summary>
    static List<string> ImplicitScalarSites(string folder, string assembly)
    {
        var parse = new CSharpParseOptions(LanguageVersion.Preview);
        var trees = Directory
            .EnumerateFiles(folder, "*.cs", SearchOption.AllDirectories)
            .Where(f => !f.Contains("/obj/") && !f.Contains("/bin/"))
            .Select(f => CSharpSyntaxTree.ParseText(File.ReadAllText(f), parse, path: f))
            .Append(CSharpSyntaxTree.ParseText(GlobalUsings, parse))
            .ToList();
        var compilation = CSharpCompilation.Create(
            assembly,
            trees,
            References(assembly),
            new CSharpCompilationOptions(OutputKind.DynamicallyLinkedLibrary, allowUnsafe: true)
        );
        var hazards = Hazards.Value;
        var sites = new List<string>();
        foreach (var tree in trees.Where(t => t.FilePath != ""))
        {
            var model = compilation.GetSemanticModel(tree);
            var lines = tree.GetText().Lines;
            foreach (var node in tree.GetRoot().DescendantNodes().OfType<ExpressionSyntax>())
            {
                int line = tree.GetLineSpan(node.Span).StartLinePosition.Line;
                if (lines[line].ToString().Contains(OptOut))
                    continue;
                string where = $"{Path.GetRelativePath(folder, tree.FilePath)}:{line + 1}:";
                if (
                    node
                        is InvocationExpressionSyntax
                            or BinaryExpressionSyntax
                            or AssignmentExpressionSyntax
                            or PrefixUnaryExpressionSyntax
                            or ObjectCreationExpressionSyntax
                    && model.GetSymbolInfo(node).Symbol is IMethodSymbol called
                    && hazards.Contains(Key(called))
                )
                    sites.Add($"{where} {Key(called)} in `{First(node)}`");
                if (node.Parent is MemberAccessExpressionSyntax access && access.Name == node)
                    continue; // the conversion is the whole member access's, seen there
                var conversion = model.GetConversion(node);
                bool named =
                    node.Parent is EqualsValueClauseSyntax
                    || node.Parent is AssignmentExpressionSyntax { Right: var right } && right == node;
                if (
                    conversion.IsUserDefined
                    && conversion.MethodSymbol?.ContainingType.ToDisplayString() == "TorchSharp.Scalar"
                    && !named
                )
                    sites.Add($"{where} implicit Scalar from `{First(node)}`");
            }
        }
        return sites;
    }

    static string First(SyntaxNode n) => n.ToString().Split('\n')[0].Trim();

    const string GlobalUsings =
        "global using System; global using System.Collections.Generic; global using System.IO; "
        + "global using System.Linq; global using System.Net.Http; global using System.Threading; "
        + "global using System.Threading.Tasks; global using Xunit;";

    /// <summary>Every assembly the test process can see, read once and shared by the compilations.</summary>
    static readonly Lazy<List<(string Name, MetadataReference Reference)>> AllReferences = new(() =>
        ((string)AppContext.GetData("TRUSTED_PLATFORM_ASSEMBLIES")!)
            .Split(Path.PathSeparator)
            .Concat(Directory.EnumerateFiles(AppContext.BaseDirectory, "*.dll"))
            .GroupBy(Path.GetFileName)
            .Select(g => g.Last())
            .Select(p => (Path.GetFileNameWithoutExtension(p), (MetadataReference)MetadataReference.CreateFromFile(p)))
            .ToList()
    );

    static IEnumerable<MetadataReference> References(string assembly) =>
        AllReferences.Value.Where(r => r.Name != assembly).Select(r => r.Reference);

    /// <summary>"Type|Method|parameter types" of a method, as Roslyn sees it (reduced extension methods as declared).
    /// </summary>
    static string Key(IMethodSymbol m)
    {
        var d = (m.ReducedFrom ?? m).OriginalDefinition;
        var parameters = string.Join(",", d.Parameters.Select(p => Name(p.Type)));
        return $"{d.ContainingType.ToDisplayString()}|{d.Name}|{parameters}";
    }

    static string Name(ITypeSymbol t) => t is IArrayTypeSymbol a ? Name(a.ElementType) + "[]" : t.MetadataName;

    /// <summary>TorchSharp's public methods that make an implicit Scalar and do not dispose it, or call one that
    /// does, from the IL of the TorchSharp in use.</summary>
    static readonly Lazy<HashSet<string>> Hazards = new(() =>
    {
        var asm = typeof(Tensor).Assembly;
        Type[] types;
        try
        {
            types = asm.GetTypes();
        }
        catch (ReflectionTypeLoadException e)
        {
            types = e.Types.OfType<Type>().ToArray();
        }
        const BindingFlags all =
            BindingFlags.Public
            | BindingFlags.NonPublic
            | BindingFlags.Static
            | BindingFlags.Instance
            | BindingFlags.DeclaredOnly;
        var calls = new Dictionary<MethodBase, List<MethodBase>>();
        var hazards = new HashSet<MethodBase>();
        foreach (var type in types)
        {
            MethodBase[] methods;
            try
            {
                methods = [.. type.GetMethods(all), .. type.GetConstructors(all)];
            }
            catch (Exception e) when (e is TypeLoadException or FileNotFoundException)
            {
                continue;
            }
            foreach (var m in methods)
            {
                var (callees, makesScalar, disposesScalar) = Calls(m);
                calls[m] = callees;
                if (
                    makesScalar
                    && !disposesScalar
                    && m.DeclaringType!.Name is not ("Scalar" or "ScalarExtensionMethods")
                )
                    hazards.Add(m);
            }
        }
        for (bool grew = true; grew; )
        {
            grew = false;
            foreach (var (m, callees) in calls)
                if (!hazards.Contains(m) && callees.Any(hazards.Contains))
                {
                    hazards.Add(m);
                    grew = true;
                }
        }
        return hazards
            .Where(m => m.IsPublic)
            .Select(m =>
                $"{m.DeclaringType!.FullName!.Replace('+', '.')}|{m.Name}|"
                + string.Join(",", m.GetParameters().Select(p => p.ParameterType.Name))
            )
            .ToHashSet();
    });

    /// <summary>The methods a method's IL calls, whether it makes an implicit Scalar, and whether it disposes one.
    /// </summary>
    static (List<MethodBase>, bool, bool) Calls(MethodBase m)
    {
        byte[]? il;
        try
        {
            il = m.GetMethodBody()?.GetILAsByteArray();
        }
        catch (Exception e) when (e is TypeLoadException or FileNotFoundException or BadImageFormatException)
        {
            il = null;
        }
        var callees = new List<MethodBase>();
        bool makes = false,
            disposes = false;
        // call, callvirt, newobj take a method token; a byte that only looks like one resolves to nothing or fails
        for (int i = 0; il is not null && i + 4 < il.Length; i++)
        {
            if (il[i] is not (0x28 or 0x6F or 0x73))
                continue;
            MethodBase? callee;
            try
            {
                callee = m.Module.ResolveMethod(BitConverter.ToInt32(il, i + 1));
            }
            catch (Exception) // a byte that only looks like an opcode, or a method of an assembly not shipped
            {
                continue;
            }
            if (callee?.DeclaringType is not { } owner)
                continue;
            callees.Add(callee);
            makes |=
                owner.Name == "Scalar" && callee.Name == "op_Implicit"
                || owner.Name == "ScalarExtensionMethods" && callee.Name.StartsWith("To");
            disposes |= owner.Name == "Scalar" && callee.Name == "Dispose";
        }
        return (callees, makes, disposes);
    }
}
