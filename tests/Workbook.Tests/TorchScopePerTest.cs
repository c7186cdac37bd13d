using System.Reflection;
using TorchSharp;
using Xunit.Sdk;

[assembly: Workbook.Tests.TorchScopePerTest]

namespace Workbook.Tests;

/// <summary>Every test runs inside a TorchSharp dispose scope. A temporary that nothing references (an intermediate
/// of <c>a.exp().sum()</c>, a tensor passed straight into a call) can otherwise be finalized by a GC that another test
/// thread triggers while a native call still reads it: freed memory, NaN results or a crashed test host (seen two
/// times in eight full runs; every time within a minute under WORKBOOK_GC_STRESS=1). The scope holds every tensor the
/// test's thread makes until the test ends. Tensors shared across tests must be detached from it (GoldenModelTests'
/// cache). Tests are synchronous, so Before, the test and After run on one thread; After checks that.</summary>
[AttributeUsage(AttributeTargets.Assembly)]
public sealed class TorchScopePerTestAttribute : BeforeAfterTestAttribute
{
    [ThreadStatic]
    static Stack<DisposeScope>? scopes;

    public override void Before(MethodInfo methodUnderTest) => (scopes ??= new()).Push(torch.NewDisposeScope());

    public override void After(MethodInfo methodUnderTest)
    {
        if (scopes is not { Count: > 0 })
            throw new InvalidOperationException(
                $"{methodUnderTest.Name}: the test ended on another thread than it started (an async test?), so its "
                    + "dispose scope cannot be closed here"
            );
        scopes.Pop().Dispose();
    }
}
