// The official Java admin client against the KRaft controller listener (bootstrap.controllers,
// KIP-919): prints "cluster <id>" when the controller answers DescribeCluster, or the failure's
// class and message. Run by tests/integration/test_stack.py with the broker's own jars:
//   java -cp '<jars>/*' DescribeQuorumCluster.java HOST:PORT [USERNAME PASSWORD]
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;

public class DescribeQuorumCluster {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_CONTROLLERS_CONFIG, args[0]);
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "5000");
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "8000");
        if (args.length == 3) {
            props.put("security.protocol", "SASL_PLAINTEXT");
            props.put("sasl.mechanism", "PLAIN");
            props.put("sasl.jaas.config", "org.apache.kafka.common.security.plain.PlainLoginModule required "
                    + "username=\"" + args[1] + "\" password=\"" + args[2] + "\";");
        }
        try (Admin admin = Admin.create(props)) {
            System.out.println("cluster " + admin.describeCluster().clusterId().get(10, TimeUnit.SECONDS));
        } catch (Exception e) {
            Throwable cause = e.getCause() != null ? e.getCause() : e;
            System.out.println("failed " + cause.getClass().getSimpleName() + ": " + cause.getMessage());
        }
    }
}
