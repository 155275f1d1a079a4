using System.Net;
using HandoffDapr.Service.Tests.Infrastructure;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using WireMock.RequestBuilders;
using WireMock.ResponseBuilders;

namespace HandoffDapr.Service.Tests.Embedded;

/// <summary>
/// The wall clock stepping forward (NTP, a resumed VM) while a launch is at the provider: a launch's saved deadline is
/// on the wall clock, its own time on the monotonic one.
/// </summary>
public sealed class WallClockStepTests : IDisposable
{
    private readonly TempDirectory temp = new();
    private readonly FakeCursor cursor = new();

    /// <summary>The system's clock plus an offset a test can change at once; timers keep real time.</summary>
    private sealed class SteppingClock : TimeProvider
    {
        public TimeSpan Step { get; set; }

        public override DateTimeOffset GetUtcNow() => base.GetUtcNow() + Step;
    }

    [Fact]
    public async Task Clock_stepping_past_the_in_flight_deadline_while_a_triggers_launch_is_out_does_not_launch_it_again()
    {
        var clock = new SteppingClock();
        var arrivals = 0;
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        // The first launch waits at the provider (without a thread); any later one is answered at once.
        cursor.Server.Given(Request.Create().WithPath("/v0/agents").UsingPost()).AtPriority(-5)
            .RespondWith(Response.Create().WithCallback(async request =>
            {
                if (Interlocked.Increment(ref arrivals) == 1)
                {
                    await Task.WhenAny(release.Task, Task.Delay(TimeSpan.FromSeconds(30)));
                }

                return await cursor.LaunchAsync(request);
            }));
        using var embedded = new EmbeddedServiceFactory(temp.File("step.db"), cursor.Url);
        using var factory = embedded.WithWebHostBuilder(builder =>
            builder.ConfigureTestServices(services => services.Replace(ServiceDescriptor.Singleton<TimeProvider>(clock))));
        var client = factory.CreateClient();
        var scheduler = factory.Services.GetRequiredService<HandoffDapr.Service.Embedded.WakeupScheduler>();

        var trigger = client.PostJsonAsync("/runs/300/handoff", Payloads.Trigger(Payloads.Run(300, ["acme/slow"], automation: false)));
        await Eventually.True(() => Volatile.Read(ref arrivals) == 1);
        clock.Step = TimeSpan.FromMinutes(3); // past Launch:InFlightTimeout (2 min)

        // Before: the schedule took the round for a crash, found no agent yet, and launched the repository again.
        var woken = await scheduler.RunDueAsync(CancellationToken.None);
        release.SetResult();
        Assert.Equal(HttpStatusCode.Accepted, (await trigger).StatusCode);

        Assert.Equal(0, woken);
        Assert.Equal(1, Volatile.Read(ref arrivals));
        Assert.Equal(1, cursor.AgentsFor("acme/slow"));
    }

    public void Dispose()
    {
        cursor.Dispose();
        temp.Dispose();
    }
}
