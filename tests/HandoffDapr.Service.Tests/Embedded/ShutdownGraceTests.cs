using System.Net;
using HandoffDapr.Service.Configuration;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Time.Testing;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>
/// Embedded mode at shutdown: provider calls under way keep a grace (Handoff:Embedded:ProviderCallGrace) to answer, and
/// what they answer is recorded; a call still unanswered when it ends is stopped and recorded as unknown, to reconcile.
/// </summary>
public sealed class ShutdownGraceTests : IDisposable
{
    private readonly TempDirectory temp = new();
    private readonly FakeCursor cursor = new();
    private readonly FakeTimeProvider time = new(new DateTimeOffset(2026, 12, 2, 10, 0, 0, TimeSpan.Zero));

    [Fact]
    public async Task Trigger_whose_launch_answers_soon_after_shutdown_begins_gets_its_agent()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("grace.db"), cursor.Url, time);
        using var client = factory.CreateClient();
        using var held = cursor.Hold("acme/slow");
        var trigger = client.PostJsonAsync("/runs/600/handoff", Payloads.Trigger(Payloads.Run(600, ["acme/slow"], automation: false)));
        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)));

        factory.Services.GetRequiredService<IHostApplicationLifetime>().StopApplication();
        time.Advance(new EmbeddedOptions().ProviderCallGrace - TimeSpan.FromSeconds(1));
        held.Release();

        var response = await trigger;
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        Assert.Equal("acme/slow", (await response.ReadJsonAsync())["successes"]![0]!["repo_name"]!.GetValue<string>());
        var launch = Assert.Single((await Stored(factory, 600)).Launches);
        Assert.Equal(Core.Handoff.LaunchPhase.Launched, launch.Phase);
    }

    [Fact]
    public async Task Scheduled_launch_still_unanswered_when_the_grace_ends_is_recorded_unknown_to_reconcile()
    {
        using var factory = new EmbeddedServiceFactory(temp.File("cut.db"), cursor.Url, time);
        using var client = factory.CreateClient();
        using var held = cursor.Hold("acme/slow");
        await client.PostJsonAsync("/events/autofix-run-completed", Payloads.Run(601, ["acme/slow"]));
        var schedule = factory.RunScheduleAsync();
        Assert.True(held.Arrived.Wait(TimeSpan.FromSeconds(10)));

        factory.Services.GetRequiredService<IHostApplicationLifetime>().StopApplication();
        time.Advance(TimeSpan.FromSeconds(1));
        Assert.NotSame(schedule, await Task.WhenAny(schedule, Task.Delay(TimeSpan.FromMilliseconds(300)))); // still within the grace
        time.Advance(new EmbeddedOptions().ProviderCallGrace);
        await schedule.WaitAsync(TimeSpan.FromSeconds(10));

        var launch = Assert.Single((await Stored(factory, 601)).Launches);
        Assert.Equal(Core.Handoff.LaunchPhase.OutcomeUnknown, launch.Phase);
    }

    /// <summary>Read from the file by a store of its own: the stopped service's are gone.</summary>
    private async Task<Core.Handoff.RunHandoffState> Stored(EmbeddedServiceFactory factory, long runId)
    {
        using var store = new HandoffDapr.Service.Embedded.SqliteRunStore(factory.DataPath, time);
        return (await store.LoadAsync(runId, CancellationToken.None)).State!;
    }

    public void Dispose()
    {
        cursor.Dispose();
        temp.Dispose();
    }
}
