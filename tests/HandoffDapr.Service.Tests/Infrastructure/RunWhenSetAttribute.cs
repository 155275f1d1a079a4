namespace HandoffDapr.Service.Tests.Infrastructure;

/// <summary>A theory reported as skipped unless the environment variable is set: for long or not yet trusted runs.</summary>
public sealed class RunWhenSetAttribute : TheoryAttribute
{
    public RunWhenSetAttribute(string variable)
    {
        if (string.IsNullOrEmpty(Environment.GetEnvironmentVariable(variable)))
        {
            Skip = $"runs when {variable} is set";
        }
    }
}
