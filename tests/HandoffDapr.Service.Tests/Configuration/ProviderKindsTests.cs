using System.Net;
using HandoffDapr.Core.Handoff;
using HandoffDapr.Service.Configuration;
using HandoffDapr.Service.Hosting;
using HandoffDapr.Service.Tests.Infrastructure;
using HandoffDapr.Service.Transport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace HandoffDapr.Service.Tests.Configuration;

/// <summary>
/// An integration's client, default API and webhook all come from its provider's entry in <see cref="ProviderKinds"/>.
/// They were once chosen by name in three places, each with Cursor as the fallback: a provider missing from one of them
/// would have run Cursor's client, or sent its key to Cursor, without a word at start.
/// </summary>
public sealed class ProviderKindsTests : IDisposable
{
    private const string Secret = "webhook-secret-of-integration-44-0123456789";
    private readonly TempDirectory temp = new();
    private readonly FakeCursor cursor = new();

    public static TheoryData<string> Kinds => new(ProviderKinds.All.Select(kind => kind.Name));

    [Theory]
    [MemberData(nameof(Kinds))]
    public async Task An_integration_gets_the_client_the_api_and_the_webhook_of_the_provider_it_names(string name)
    {
        var kind = ProviderKinds.Find(name)!;
        var settings = new Dictionary<string, string?>
        {
            ["Handoff:PublicBaseUrl"] = "https://handoff.example.com",
            ["Handoff:Integrations:44:Provider"] = name,
            ["Handoff:Integrations:44:ApiKey"] = "key-44",
            ["Handoff:Integrations:44:WebhookSecret"] = Secret,
        };
        using var factory = new EmbeddedServiceFactory(temp.File($"kinds-{Guid.NewGuid():N}.db"), cursor.Url, settings: settings);

        var integration = factory.Services.GetRequiredService<IIntegrationCatalog>().Find(44)!;

        Assert.Equal(name, integration.Provider.ProviderName);
        // The client made from its settings (no BaseUrl) calls the provider's public API.
        var bound = factory.Services.GetRequiredService<IOptions<HandoffOptions>>().Value.Integrations["44"];
        using var client = factory.Services.GetRequiredService<ProviderHttpClients>().Create(bound);
        Assert.Equal(new Uri(kind.PublicApi.TrimEnd('/') + "/"), client.BaseAddress);
        if (kind.WebhookPath is null)
        {
            Assert.Null(integration.Webhook);
            return;
        }

        // The URL the launches give is one the service serves, for this integration: unsigned, it is refused, not unknown.
        Assert.Equal(new Uri($"https://handoff.example.com{kind.WebhookPath}/44"), integration.Webhook!.Url);
        var unsigned = await factory.CreateClient().PostAsync(integration.Webhook.Url.AbsolutePath, new StringContent("{}", System.Text.Encoding.UTF8, "application/json"));
        Assert.Equal(HttpStatusCode.Unauthorized, unsigned.StatusCode);
    }

    [Fact]
    public void Each_provider_has_a_name_and_a_public_api_of_its_own()
    {
        Assert.Distinct(ProviderKinds.All.Select(kind => kind.Name));
        Assert.Distinct(ProviderKinds.All.Select(kind => new Uri(kind.PublicApi).Host));
        Assert.All(ProviderKinds.All, kind => Assert.Equal(Uri.UriSchemeHttps, new Uri(kind.PublicApi).Scheme));
    }

    public void Dispose()
    {
        cursor.Dispose();
        temp.Dispose();
    }
}
