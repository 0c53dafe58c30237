# The project image every Kubeflow task runs in: Debian with Python 3.11, installed by the README's
# install command and nothing else. (No Docker daemon runs where this was written: it is kept that plain.)
FROM python:3.11-slim-bookworm
WORKDIR /opt/mnist-pipeline
COPY . .
RUN apt-get update && apt-get install -y dataset-fashion-mnist chromium mariadb-server && pip install -e '.[test]'
