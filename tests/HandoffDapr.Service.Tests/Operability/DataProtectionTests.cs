using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.Logging.Testing;

namespace HandoffDapr.Service.Tests.Operability;

/// <summary>
/// Nothing in the service protects data (no cookies, no antiforgery; callers are checked by token), so it must not
/// load a data-protection key ring: that wrote a key file into the home folder at every start and, under a read-only
/// root filesystem (k8s/), logged three warnings about keys nobody uses.
/// </summary>
public sealed class DataProtectionTests : IDisposable
{
    private readonly TempDirectory temp = new();
    private readonly FakeCursor cursor = new();

    [Theory]
    [InlineData(null)]
    [InlineData("data-protection-token-9d2c")]
    public async Task Start_up_loads_no_data_protection_keys(string? apiToken)
    {
        var logs = new FakeLogCollector();
        using var factory = new EmbeddedServiceFactory(temp.File($"dp-{apiToken is null}.db"), cursor.Url, settings: new Dictionary<string, string?>
        {
            ["Handoff:ApiToken"] = apiToken,
            // appsettings.json holds Microsoft.AspNetCore at Warning; the key ring's loading logs below that.
            ["Logging:LogLevel:Microsoft.AspNetCore.DataProtection"] = "Trace",
        })
        {
            Logs = logs,
        };
        var client = factory.CreateClient();
        if (apiToken is not null)
        {
            client.DefaultRequestHeaders.Authorization = new("Bearer", apiToken);
        }

        var read = await client.GetAsync("/runs/1/handoff");

        Assert.Equal(System.Net.HttpStatusCode.NotFound, read.StatusCode);
        Assert.Empty(logs.GetSnapshot().Where(record => record.Category?.StartsWith("Microsoft.AspNetCore.DataProtection", StringComparison.Ordinal) == true)
            .Select(record => $"{record.Category}: {record.Message}"));
    }

    public void Dispose()
    {
        cursor.Dispose();
        temp.Dispose();
    }
}
